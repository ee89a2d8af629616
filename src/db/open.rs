//! The databases a configuration uses: [`open_for`] opens every `db_url` (reusing those a
//! reload keeps) and creates the seeds' tables; [`OpenDbs`] finds one by URL.
//!
//! It does not run queries or manage connections (that is [`super::Db`]).

use std::sync::Arc;

use super::{parse_url, Db, DbError, Dialect, Url};

/// Workers per database for [`Db::submit`].
pub const WORKERS: usize = 4;

/// Opens every database `urls` names (and `default` when `need_default`), reusing those in
/// `open` (a reload keeps its connections). SQLite files get the seeds' tables; the data
/// directory of the default database is created. An error names the URL (without password).
pub fn open_for(
    urls: &[String],
    default: &str,
    need_default: bool,
    open: &[(String, Arc<Db>)],
) -> Result<Vec<(String, Arc<Db>)>, DbError> {
    let mut want: Vec<String> = urls.to_vec();
    if need_default && !want.iter().any(|u| u == default) {
        want.push(default.to_string());
    }
    let mut out = Vec::new();
    for url in want {
        if let Some((_, d)) = open.iter().find(|(u, _)| *u == url) {
            out.push((url, Arc::clone(d)));
            continue;
        }
        if url == default {
            if let Ok(Url::Sqlite(path)) = parse_url(&url) {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
            }
        }
        let db = Db::open(&url, WORKERS)?;
        match db.init_schema() {
            Ok(()) => {}
            Err(e) if db.dialect() == Dialect::Mysql => crate::warn!(
                "database {}: cannot create the tables ({e}); run `serctl db init`",
                db.name()
            ),
            Err(e) => return Err(e),
        }
        out.push((url, db));
    }
    Ok(out)
}

/// The open databases, by `db_url`, and the URL of the default one (modules that set no
/// `db_url` use it). Built at start, rebuilt by a reload (keeping open connections).
#[derive(Debug, Clone, Default)]
pub struct OpenDbs {
    /// `sqlite://<data_dir>/ser.db`: the database of modules that set no `db_url`.
    pub default_url: String,
    pub list: Vec<(String, Arc<Db>)>,
}

impl OpenDbs {
    /// Closes every open database (see [`Db::close`]): at shutdown, after the shards.
    pub fn close_all(&self) {
        for (_, db) in &self.list {
            db.close();
        }
    }

    /// The open database of `url` (a module's `db_url`, or the default when None).
    pub fn get(&self, url: Option<&str>) -> Option<Arc<Db>> {
        let url = url.unwrap_or(&self.default_url);
        self.list
            .iter()
            .find(|(u, _)| u == url)
            .map(|(_, d)| Arc::clone(d))
    }
}

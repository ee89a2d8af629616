//! What is measured: the scenarios ([`SCENARIOS`], each a [`Scenario`] with its [`Load`]),
//! the servers under test ([`Server`]), the generators that drive them ([`Driver`]), and the
//! fixed ports and users every scenario uses.
//!
//! Definitions only: nothing here starts a process or reads a result.

pub(super) const UAS_PORT: u16 = 5070;
pub(super) const UAC_PORT: u16 = 5090;
/// Users created for the digest scenario (all with the password [`PASSWORD`]).
pub(super) const AUTH_USERS: usize = 100;
pub(super) const PASSWORD: &str = "pw1";
/// Users registered before the calls of `lookup-relay` (bench/sipp/users.csv has 1000).
pub(super) const PREREG_USERS: u64 = 1000;

/// How the load of a scenario is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// OPTIONS answered by the server itself.
    Options,
    /// INVITE/ACK/BYE through the server to a UAS.
    Call,
    /// REGISTER -> 200 (a distinct AOR each).
    Register,
    /// REGISTER -> 401 -> REGISTER with credentials -> 200.
    RegisterAuth,
    /// Users registered first, then calls to them (lookup + relay).
    CallToUsers,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub title: &'static str,
    pub port: u16,
    pub load: Load,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "options",
        title: "OPTIONS answered statelessly (sl_send_reply)",
        port: 5066,
        load: Load::Options,
    },
    Scenario {
        name: "relay",
        title: "stateless relay (forward)",
        port: 5061,
        load: Load::Call,
    },
    Scenario {
        name: "stateful",
        title: "stateful relay with record routing (t_relay + record_route)",
        port: 5062,
        load: Load::Call,
    },
    Scenario {
        name: "register",
        title: "registrar (save)",
        port: 5063,
        load: Load::Register,
    },
    Scenario {
        name: "register-auth",
        title: "registrar with digest auth (www_authorize + save)",
        port: 5064,
        load: Load::RegisterAuth,
    },
    Scenario {
        name: "lookup-relay",
        title: "registrar + lookup + stateful relay (calls to registered users)",
        port: 5065,
        load: Load::CallToUsers,
    },
];

/// The server under test in one series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Server {
    Ser { shards: usize },
    Kamailio { children: usize },
}

impl Server {
    pub fn label(&self) -> String {
        match self {
            Server::Ser { shards } => format!("ser n={shards}"),
            Server::Kamailio { children } => format!("kamailio c={children}"),
        }
    }
    pub fn is_ser(&self) -> bool {
        matches!(self, Server::Ser { .. })
    }
}

/// Which generator drove a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// loadgen with the JSON contract.
    Loadgen,
    /// Today's loadgen (`options` only, text summary).
    LoadgenLegacy,
    Sipp,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Loadgen => "loadgen",
            Driver::LoadgenLegacy => "loadgen (options, text output)",
            Driver::Sipp => "SIPp",
        }
    }
}

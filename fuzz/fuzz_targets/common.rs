//! Shared by the targets: an input split into a few parameter bytes, chunk sizes and the
//! stream itself, so that the fuzzer chooses where a stream is cut between reads.

/// `data` = `[flags, n, n chunk-size bytes..., stream...]` (n taken modulo 8). Returns the
/// flags, the chunk sizes (each 1..=256, used in turn, repeating) and the stream.
pub fn split(data: &[u8]) -> (u8, Vec<usize>, &[u8]) {
    let flags = data.first().copied().unwrap_or(0);
    let n = usize::from(data.get(1).copied().unwrap_or(0) % 8);
    let sizes: Vec<usize> = data
        .get(2..2 + n)
        .unwrap_or_default()
        .iter()
        .map(|&b| usize::from(b) + 1)
        .collect();
    let stream = data.get(2 + n..).unwrap_or_default();
    (flags, sizes, stream)
}

/// `stream` cut into chunks of the sizes in turn (one chunk when there are none).
pub fn chunks<'a>(stream: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![stream];
    }
    let mut out = Vec::new();
    let mut rest = stream;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes[k % sizes.len()].min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
        k += 1;
    }
    out
}

//! Resources warren-local serves itself, on its proxy port, to plain HTTP requests whose target
//! is a path (origin-form, `GET /proxy.pac`) rather than a URL to fetch through the tunnel.
//! Such requests need no proxy login, so nothing served here may be secret.

/// The resource at `path` (with any query) as (content type, body), or `None`: the client then
/// gets 400, since a path alone is not a proxy request.
pub fn serve(path: &str) -> Option<(&'static str, Vec<u8>)> {
    let _ = path;
    None
}

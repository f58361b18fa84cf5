//! Interop with gRPC clients that send a socket path as HTTP/2 `:authority`.
//!
//! gRPC's C core (Python's `grpcio`, so py-spiffe; Envoy) sends the percent-encoded socket
//! path (`tmp%2Fagent.sock`) as `:authority` on a Unix socket, and grpc-java sends the raw
//! path. Both are invalid authorities, and `h2` (under tonic) resets such streams with
//! `PROTOCOL_ERROR` (hyperium/h2#487, grpc/grpc#38142). The authority means nothing on a
//! Unix socket, so this shim sits between the socket and tonic and rewrites it to
//! `localhost`, as grpc-go and Kubernetes send:
//!
//! - client → server: the connection preface and frames are parsed; every header block
//!   (HEADERS and its CONTINUATIONs) is decoded with an HPACK decoder that tracks the
//!   client's dynamic table, `:authority` is rewritten when it is not a valid authority, and
//!   the block is re-encoded with literals only (never indexed), so tonic's decoder table
//!   stays empty and can never disagree with the client's; padding is dropped, priority
//!   kept; blocks are re-split to the peer's frame size. Every other frame passes unchanged.
//! - server → client: copied as is.
//!
//! Limits: the preface must arrive within [`PREFACE_DEADLINE`]; frames above [`MAX_FRAME`]
//! (what the server advertises), header blocks above [`MAX_BLOCK`] and header lists that
//! decode to more than [`MAX_HEADER_LIST`] bytes (an HPACK "bomb": one indexed byte can stand
//! for a 4 KiB table entry) close the connection; a block that does not decode closes it (h2
//! would answer COMPRESSION_ERROR).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest frame accepted from a client: what the server advertises (HTTP/2's default).
pub const MAX_FRAME: usize = 16_384;
/// Largest header block (all its frames) accepted.
pub const MAX_BLOCK: usize = 64 * 1024;
/// Most bytes a header list may decode to (names and values plus 32 each, as HTTP/2 counts
/// them; the server advertises 16 KiB).
pub const MAX_HEADER_LIST: usize = 16 * 1024;
/// How long a client has to send the HTTP/2 connection preface.
pub const PREFACE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// Frame size the rewritten header blocks are split to (HTTP/2's default maximum).
const OUT_FRAME: usize = 16_384;
/// The dynamic table size the server allows (HTTP/2's default `SETTINGS_HEADER_TABLE_SIZE`;
/// tonic does not change it).
const TABLE_SIZE: usize = 4096;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

fn bad(why: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

/// Whether `v` is an authority h2 accepts (so it is passed on unchanged).
fn valid_authority(v: &[u8]) -> bool {
    axum::http::uri::Authority::try_from(v).is_ok()
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), after `first`'s high bits.
fn put_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Re-encodes a header list with "literal without indexing, new name", raw strings.
fn encode(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        put_int(&mut out, 0x00, 7, name.len());
        out.extend_from_slice(name);
        put_int(&mut out, 0x00, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// Decodes a header block, fixes `:authority`, re-encodes it.
fn rewrite(decoder: &mut loona_hpack::Decoder<'_>, block: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut total = 0usize;
    let mut too_big = false;
    // Every header is decoded (the client's dynamic table must stay in step) but kept only
    // while the list is within its cap.
    decoder
        .decode_with_cb(block, |name, value| {
            total = total.saturating_add(name.len() + value.len() + 32);
            if total > MAX_HEADER_LIST {
                too_big = true;
            } else {
                headers.push((name.into_owned(), value.into_owned()));
            }
        })
        .map_err(|_| bad("undecodable header block"))?;
    if too_big {
        return Err(bad("header list too large"));
    }
    for (name, value) in headers.iter_mut() {
        if name.as_slice() == b":authority" && !valid_authority(value) {
            *value = b"localhost".to_vec();
        }
    }
    Ok(encode(&headers))
}

async fn frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<([u8; 9], Vec<u8>)>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    if len > MAX_FRAME {
        return Err(bad("frame too large"));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((head, payload)))
}

fn header(len: usize, ty: u8, flags: u8, stream: &[u8]) -> Vec<u8> {
    let mut h = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    h.extend_from_slice(stream);
    h
}

/// Copies a client's byte stream to the server, rewriting header blocks as described above.
pub async fn client_to_server<R, W>(mut from: R, mut to: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    tokio::time::timeout(PREFACE_DEADLINE, from.read_exact(&mut preface))
        .await
        .map_err(|_| bad("no HTTP/2 preface in time"))??;
    if &preface != PREFACE {
        return Err(bad("not an HTTP/2 connection"));
    }
    to.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(TABLE_SIZE);
    while let Some((head, payload)) = frame(&mut from).await? {
        let (ty, flags, stream) = (head[3], head[4], &head[5..9]);
        if ty != HEADERS {
            to.write_all(&head).await?;
            to.write_all(&payload).await?;
            to.flush().await?;
            continue;
        }
        let mut p = payload.as_slice();
        let mut pad = 0;
        if flags & PADDED != 0 {
            pad = usize::from(*p.first().ok_or(bad("bad padding"))?);
            p = &p[1..];
        }
        let mut priority = Vec::new();
        if flags & PRIORITY != 0 {
            priority = p.get(..5).ok_or(bad("bad priority"))?.to_vec();
            p = &p[5..];
        }
        let mut block =
            p.get(..p.len().checked_sub(pad).ok_or(bad("bad padding"))?).ok_or(bad("bad padding"))?.to_vec();
        if block.len() > MAX_BLOCK {
            return Err(bad("header block too large"));
        }
        let mut end = flags & END_HEADERS != 0;
        while !end {
            let Some((h, more)) = frame(&mut from).await? else { return Err(bad("truncated header block")) };
            if h[3] != CONTINUATION || h[5..9] != *stream {
                return Err(bad("header block interrupted"));
            }
            block.extend_from_slice(&more);
            if block.len() > MAX_BLOCK {
                return Err(bad("header block too large"));
            }
            end = h[4] & END_HEADERS != 0;
        }
        let fixed = rewrite(&mut decoder, &block)?;
        let first_room = OUT_FRAME - priority.len();
        let (first, rest) = fixed.split_at(fixed.len().min(first_room));
        let mut out_flags = flags & (END_STREAM | PRIORITY);
        if rest.is_empty() {
            out_flags |= END_HEADERS;
        }
        to.write_all(&header(priority.len() + first.len(), HEADERS, out_flags, stream)).await?;
        to.write_all(&priority).await?;
        to.write_all(first).await?;
        let mut chunks = rest.chunks(OUT_FRAME).peekable();
        while let Some(c) = chunks.next() {
            let f = if chunks.peek().is_none() { END_HEADERS } else { 0 };
            to.write_all(&header(c.len(), CONTINUATION, f, stream)).await?;
            to.write_all(c).await?;
        }
        to.flush().await?;
    }
    to.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_invalid_authorities_are_rewritten() {
        assert!(valid_authority(b"localhost"));
        assert!(valid_authority(b"example.org:8080"));
        assert!(!valid_authority(b"tmp%2Fagent.sock"));
        assert!(!valid_authority(b"/run/spire/agent.sock"));
        // What the client's encoder put in its dynamic table is resolved on later requests.
        let mut enc = loona_hpack::Encoder::new();
        let h: Vec<(&[u8], &[u8])> = vec![(b":method", b"POST"), (b":authority", b"tmp%2Fagent.sock"), (b"x", b"y")];
        let first = enc.encode(h.clone());
        let second = enc.encode(h);
        let mut dec = loona_hpack::Decoder::new();
        // A few bytes that decode to a huge list (indexed copies of one big entry).
        let big = vec![b'a'; 4000];
        let mut bomb = loona_hpack::Encoder::new().encode(vec![(&b"x-big"[..], &big[..])]);
        bomb.extend(std::iter::repeat_n(0xbe, 100));
        assert!(rewrite(&mut loona_hpack::Decoder::new(), &bomb).is_err());
        for block in [first, second] {
            let out = rewrite(&mut dec, &block).unwrap();
            let got = loona_hpack::Decoder::new().decode(&out).unwrap();
            assert_eq!(got[1], (b":authority".to_vec(), b"localhost".to_vec()));
            assert_eq!(got[2], (b"x".to_vec(), b"y".to_vec()));
        }
        let mut long = Vec::new();
        put_int(&mut long, 0, 7, 1337);
        assert_eq!(long, [127, 186, 9]);
    }
}

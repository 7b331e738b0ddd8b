//! Accepting gRPC clients that send the socket path as `:authority`.
//!
//! Over a unix socket, gRPC C-core (Python, C++, Ruby) sends the URL-escaped socket path as
//! the HTTP/2 `:authority` (`%2Frun%2Fcsi%2Fcsi.sock`), grpc-java and some grpcurl versions
//! the path itself; Go sends `localhost`. Neither path form is a URI authority, and h2 (under
//! hyper and tonic) resets such a stream with PROTOCOL_ERROR before any of our code sees the
//! request. h2 has no setting to relax this (its open pull request #487 would), and tonic
//! and hyper none either.
//!
//! So each accepted connection passes through this relay before h2 reads it:
//! - client to server, frames are relayed byte for byte, except header blocks (a HEADERS
//!   frame and its CONTINUATION frames), which are decoded with the connection's HPACK state
//!   and encoded again, with an `:authority` that is not a valid URI authority replaced by
//!   `localhost` (on a unix socket the authority names nothing; the driver never reads it);
//! - the blocks it writes use only literals without indexing, so the server's HPACK table
//!   stays empty and can never disagree with the client's, whatever the client indexes;
//! - server to client, bytes are relayed as they are.
//!
//! Everything else h2 checks, it still checks. A connection that breaks the framing or HPACK
//! rules is closed, as h2 would close it with a connection error.
//!
//! Cost: one in-process copy of every byte and one task per connection, a header block
//! decoded and encoded again per call (a few microseconds; the re-encoded block is larger, on
//! a local pipe), an HPACK decoder (`loona-hpack`) on the socket, and this code in the path
//! of every client, the Go sidecars included. Connections are bounded
//! ([`MAX_CONNECTIONS`]), and so is what one header block may hold ([`MAX_HEADER_BLOCK`],
//! [`MAX_HEADER_LIST`], both above hyper's own 16 KiB limit).

use std::sync::Arc;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::Semaphore;

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What replaces an `:authority` that is not one.
pub const LOCAL_AUTHORITY: &[u8] = b"localhost";

/// Connections relayed at once; beyond that, new ones are closed at once.
pub const MAX_CONNECTIONS: usize = 128;

/// The largest header block (compressed, all its frames) the relay holds.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// The largest decoded header list (RFC 7541 sizes: name + value + 32 per field).
pub const MAX_HEADER_LIST: usize = 64 * 1024;

/// The HPACK table size a client may use: SETTINGS_HEADER_TABLE_SIZE's default, which the
/// driver's h2 server keeps.
const HEADER_TABLE_SIZE: usize = 4096;

/// Frames the relay writes are no larger than every HTTP/2 peer accepts.
const MAX_FRAME: usize = 16_384;

/// How much one relayed connection buffers between the relay and h2.
const PIPE_BUFFER: usize = 64 * 1024;

const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

#[derive(Debug, Error)]
pub enum RelayError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("HTTP/2 framing: {0}")]
    Framing(String),
    #[error("HPACK: {0}")]
    Hpack(String),
    #[error("header block over {limit} bytes")]
    TooLarge { limit: usize },
}

/// Decodes client header blocks with the connection's HPACK state and encodes them again,
/// statelessly, with a usable `:authority`.
pub struct HeaderRewriter {
    decoder: loona_hpack::Decoder<'static>,
}

impl Default for HeaderRewriter {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self { decoder }
    }
}

impl HeaderRewriter {
    /// One complete header block in, the block to send on out.
    pub fn rewrite(&mut self, block: &[u8]) -> Result<Vec<u8>, RelayError> {
        let mut out = Vec::with_capacity(block.len() * 2);
        let mut list_size = 0usize;
        let mut too_large = false;
        let decoded = self.decoder.decode_with_cb(block, |name, value| {
            list_size = list_size.saturating_add(name.len() + value.len() + 32);
            if list_size > MAX_HEADER_LIST {
                too_large = true;
                return;
            }
            let value: &[u8] = if name.as_ref() == b":authority" && !is_authority(&value) {
                LOCAL_AUTHORITY
            } else {
                &value
            };
            encode_literal(&mut out, &name, value);
        });
        // Decode to the end even when too large: the table must follow the client's.
        decoded.map_err(|e| RelayError::Hpack(e.to_string()))?;
        if too_large {
            return Err(RelayError::TooLarge {
                limit: MAX_HEADER_LIST,
            });
        }
        Ok(out)
    }
}

/// What h2 accepts as `:authority`.
fn is_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits set to `flags`.
fn encode_integer(out: &mut Vec<u8>, flags: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

fn encode_string(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_integer(out, 0, 7, bytes.len());
    out.extend_from_slice(bytes);
}

/// "Literal header field without indexing, new name", no Huffman coding.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    encode_string(out, name);
    encode_string(out, value);
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = len as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// A header block as HEADERS and CONTINUATION frames of at most [`MAX_FRAME`] bytes.
fn headers_frames(stream: u32, flags: u8, priority: Option<[u8; 5]>, block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + 2 * FRAME_HEADER + 5);
    let first_room = MAX_FRAME - if priority.is_some() { 5 } else { 0 };
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    let mut first_flags = flags & END_STREAM;
    if priority.is_some() {
        first_flags |= PRIORITY;
    }
    if rest.is_empty() {
        first_flags |= END_HEADERS;
    }
    let priority_len = priority.map_or(0, |p| p.len());
    frame_header(
        &mut out,
        priority_len + first.len(),
        HEADERS,
        first_flags,
        stream,
    );
    if let Some(p) = priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if after.is_empty() { END_HEADERS } else { 0 };
        frame_header(&mut out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
        rest = after;
    }
    out
}

struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8; FRAME_HEADER]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize,
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// Reads a frame header; `None` at a clean end of the stream (between frames).
async fn read_head<R: AsyncRead + Unpin>(from: &mut R) -> Result<Option<FrameHead>, RelayError> {
    let mut b = [0u8; FRAME_HEADER];
    let mut got = 0;
    while got < FRAME_HEADER {
        let n = from.read(&mut b[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(RelayError::Framing(
                    "connection closed inside a frame header".into(),
                ))
            };
        }
        got += n;
    }
    Ok(Some(FrameHead::parse(&b)))
}

async fn read_payload<R: AsyncRead + Unpin>(
    from: &mut R,
    len: usize,
    held: usize,
) -> Result<Vec<u8>, RelayError> {
    if held.saturating_add(len) > MAX_HEADER_BLOCK {
        return Err(RelayError::TooLarge {
            limit: MAX_HEADER_BLOCK,
        });
    }
    let mut payload = vec![0u8; len];
    from.read_exact(&mut payload).await?;
    Ok(payload)
}

/// The fragment of a HEADERS payload, and its priority fields, padding removed.
fn headers_fragment(flags: u8, payload: &[u8]) -> Result<(Option<[u8; 5]>, &[u8]), RelayError> {
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&len, after) = rest
            .split_first()
            .ok_or_else(|| RelayError::Framing("padded HEADERS without a pad length".into()))?;
        pad = usize::from(len);
        rest = after;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let (fields, after) = rest
            .split_first_chunk::<5>()
            .ok_or_else(|| RelayError::Framing("HEADERS too short for its priority".into()))?;
        priority = Some(*fields);
        rest = after;
    }
    if pad > rest.len() {
        return Err(RelayError::Framing(
            "HEADERS padding exceeds the payload".into(),
        ));
    }
    Ok((priority, &rest[..rest.len() - pad]))
}

/// Relays a client's bytes to the server, rewriting its header blocks (see the module docs).
/// Returns at the client's clean end; the caller then closes the server side.
pub async fn relay_requests<R, W>(mut from: R, to: &mut W) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE.len()];
    let mut got = 0;
    while got < preface.len() {
        let n = from.read(&mut preface[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
        if preface[..got] != PREFACE[..got] {
            break;
        }
    }
    to.write_all(&preface[..got]).await?;
    if preface[..got] != PREFACE[..] {
        // Not HTTP/2 with prior knowledge: h2 answers it as it sees fit.
        tokio::io::copy(&mut from, to).await?;
        return Ok(());
    }
    let mut rewriter = HeaderRewriter::default();
    while let Some(head) = read_head(&mut from).await? {
        match head.kind {
            HEADERS => {
                let payload = read_payload(&mut from, head.len, 0).await?;
                let (priority, fragment) = headers_fragment(head.flags, &payload)?;
                let mut block = fragment.to_vec();
                let mut ended = head.flags & END_HEADERS != 0;
                while !ended {
                    let next = read_head(&mut from).await?.ok_or_else(|| {
                        RelayError::Framing("connection closed inside a header block".into())
                    })?;
                    if next.kind != CONTINUATION || next.stream != head.stream {
                        return Err(RelayError::Framing(format!(
                            "frame type {} on stream {} inside the header block of stream {}",
                            next.kind, next.stream, head.stream
                        )));
                    }
                    block.extend(read_payload(&mut from, next.len, block.len()).await?);
                    ended = next.flags & END_HEADERS != 0;
                }
                let rewritten = rewriter.rewrite(&block)?;
                let frames = headers_frames(head.stream, head.flags, priority, &rewritten);
                to.write_all(&frames).await?;
            }
            CONTINUATION => {
                return Err(RelayError::Framing(format!(
                    "CONTINUATION on stream {} without a HEADERS frame",
                    head.stream
                )));
            }
            _ => {
                let mut out = Vec::with_capacity(FRAME_HEADER);
                frame_header(&mut out, head.len, head.kind, head.flags, head.stream);
                to.write_all(&out).await?;
                let want = head.len as u64;
                let copied = tokio::io::copy(&mut (&mut from).take(want), to).await?;
                if copied != want {
                    return Err(RelayError::Framing(
                        "connection closed inside a frame".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The relays of one driver: each accepted connection becomes the in-process pipe h2 reads.
#[derive(Clone)]
pub struct Relays {
    slots: Arc<Semaphore>,
}

impl Default for Relays {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

impl Relays {
    /// Starts relaying `client`; returns the server's end, or `None` when [`MAX_CONNECTIONS`]
    /// are relayed already (the client is closed).
    pub fn relay<S>(&self, client: S) -> Option<DuplexStream>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "too many CSI connections at once; closing a new one"
            );
            return None;
        };
        let (server_end, relay_end) = tokio::io::duplex(PIPE_BUFFER);
        tokio::spawn(async move {
            let (client_read, mut client_write) = tokio::io::split(client);
            let (mut server_read, mut server_write) = tokio::io::split(relay_end);
            let requests = async {
                let result = relay_requests(client_read, &mut server_write).await;
                let _ = server_write.shutdown().await;
                result
            };
            let responses = async {
                let result = tokio::io::copy(&mut server_read, &mut client_write).await;
                let _ = client_write.shutdown().await;
                result
            };
            let (requests, responses) = tokio::join!(requests, responses);
            if let Err(error) = requests {
                tracing::info!(%error, "CSI connection closed: a client broke HTTP/2 framing");
            }
            if let Err(error) = responses {
                tracing::debug!(%error, "CSI connection: relaying to the client ended");
            }
            drop(permit);
        });
        Some(server_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        loona_hpack::Decoder::new().decode(block).unwrap()
    }

    fn request(authority: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
        let fields: [(&'static [u8], &[u8]); 6] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/csi.v1.Identity/GetPluginInfo"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        fields.iter().map(|(n, v)| (*n, v.to_vec())).collect()
    }

    fn encode_with_table(
        encoder: &mut loona_hpack::Encoder,
        fields: &[(&[u8], Vec<u8>)],
    ) -> Vec<u8> {
        encoder.encode(fields.iter().map(|(n, v)| (*n, v.as_slice())))
    }

    #[test]
    fn integers_follow_rfc_7541() {
        // C.1.1 and C.1.2: 10 and 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        encode_integer(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        encode_integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        encode_integer(&mut out, 0, 7, 127);
        assert_eq!(out, [127, 0]);
    }

    #[test]
    fn a_path_authority_becomes_localhost_and_others_are_kept() {
        for (sent, expected) in [
            (&b"%2Frun%2Fcsi%2Fcsi.sock"[..], &b"localhost"[..]),
            (b"/run/csi/csi.sock", b"localhost"),
            (b"localhost", b"localhost"),
            (b"csi.example:50051", b"csi.example:50051"),
        ] {
            let mut encoder = loona_hpack::Encoder::new();
            let block = encode_with_table(&mut encoder, &request(sent));
            let out = HeaderRewriter::default().rewrite(&block).unwrap();
            let fields = decode_all(&out);
            let authority = fields.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(authority.1, expected, "{}", String::from_utf8_lossy(sent));
            // Everything else is as sent, in order.
            let names: Vec<&[u8]> = fields.iter().map(|(n, _)| n.as_slice()).collect();
            let sent_names: Vec<&[u8]> = request(sent).iter().map(|(n, _)| *n).collect();
            assert_eq!(names, sent_names);
        }
    }

    #[test]
    fn the_client_table_is_followed_and_the_server_table_stays_empty() {
        // A client that indexes its fields sends later requests as table references; each
        // rewritten block must decode alone, with a fresh (empty) table.
        let mut encoder = loona_hpack::Encoder::new();
        let mut rewriter = HeaderRewriter::default();
        for i in 0..50 {
            let mut fields = request(b"/run/csi/csi.sock");
            let id = format!("call-{i}").into_bytes();
            fields.push((b"x-request-id", id.clone()));
            let block = encode_with_table(&mut encoder, &fields);
            let out = rewriter.rewrite(&block).unwrap();
            let decoded = decode_all(&out);
            assert_eq!(decoded.len(), fields.len());
            assert_eq!(decoded[3].1, b"localhost");
            assert_eq!(decoded.last().unwrap().1, id);
        }
    }

    #[test]
    fn hpack_errors_and_oversized_lists_are_refused() {
        let mut rewriter = HeaderRewriter::default();
        // An index past both tables; a table size over the allowed 4096.
        assert!(matches!(
            rewriter.rewrite(&[0xff, 0x7f]),
            Err(RelayError::Hpack(_))
        ));
        let mut update = Vec::new();
        encode_integer(&mut update, 0x20, 5, 8192);
        assert!(matches!(
            rewriter.rewrite(&update),
            Err(RelayError::Hpack(_))
        ));
        // 100 fields of 1 KiB: over the decoded limit.
        let mut block = Vec::new();
        for _ in 0..100 {
            encode_literal(&mut block, b"x-big", &[b'a'; 1024]);
        }
        assert!(matches!(
            HeaderRewriter::default().rewrite(&block),
            Err(RelayError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: every prefix of a few pseudo-random streams.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let mut block = Vec::new();
            for _ in 0..64 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                block.push(state as u8);
            }
            let mut rewriter = HeaderRewriter::default();
            for end in 0..block.len() {
                let _ = rewriter.rewrite(&block[..end]);
            }
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    /// Splits relayed bytes (after the preface) into (kind, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let head = FrameHead::parse(bytes[..FRAME_HEADER].try_into().unwrap());
            let payload = bytes[FRAME_HEADER..FRAME_HEADER + head.len].to_vec();
            out.push((head.kind, head.flags, head.stream, payload));
            bytes = &bytes[FRAME_HEADER + head.len..];
        }
        out
    }

    #[tokio::test]
    async fn frames_are_relayed_and_header_blocks_rewritten() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encode_with_table(&mut encoder, &request(b"%2Fcsi.sock"));
        let (a, b) = block.split_at(block.len() / 2);
        // SETTINGS, a padded HEADERS with priority split over a CONTINUATION, DATA.
        let mut headers = vec![3u8];
        headers.extend_from_slice(&[0, 0, 0, 0, 15]);
        headers.extend_from_slice(a);
        headers.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &headers));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        let mut out = Vec::new();
        relay_requests(input.as_slice(), &mut out).await.unwrap();
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let relayed = frames(&out[PREFACE.len()..]);
        assert_eq!(relayed.len(), 3);
        assert_eq!(relayed[0], (0x4, 0, 0, vec![0, 3, 0, 0, 0, 100]));
        let (kind, flags, stream, payload) = &relayed[1];
        assert_eq!(
            (*kind, *flags, *stream),
            (HEADERS, PRIORITY | END_HEADERS, 1)
        );
        assert_eq!(&payload[..5], &[0, 0, 0, 0, 15]);
        let fields = decode_all(&payload[5..]);
        assert_eq!(fields[3], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(relayed[2], (0x0, END_STREAM, 1, vec![0, 0, 0, 0, 0]));
    }

    #[tokio::test]
    async fn broken_framing_is_refused_and_other_protocols_pass_untouched() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, b"data"));
        let mut out = Vec::new();
        let err = relay_requests(input.as_slice(), &mut out)
            .await
            .unwrap_err();
        assert!(matches!(err, RelayError::Framing(_)), "{err}");
        let mut input = PREFACE.to_vec();
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x82]));
        assert!(
            relay_requests(input.as_slice(), &mut Vec::new())
                .await
                .is_err()
        );
        // Padding longer than the frame.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | END_HEADERS, 1, &[9, 0x82]));
        assert!(
            relay_requests(input.as_slice(), &mut Vec::new())
                .await
                .is_err()
        );

        let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut out = Vec::new();
        relay_requests(&http1[..], &mut out).await.unwrap();
        assert_eq!(out, http1);
    }

    #[test]
    fn long_blocks_are_split_into_continuations() {
        let block = vec![0u8; MAX_FRAME * 2 + 10];
        let out = headers_frames(7, END_STREAM | PADDED, None, &block);
        let relayed = frames(&out);
        assert_eq!(relayed.len(), 3);
        assert_eq!((relayed[0].0, relayed[0].1), (HEADERS, END_STREAM));
        assert_eq!((relayed[1].0, relayed[1].1), (CONTINUATION, 0));
        assert_eq!((relayed[2].0, relayed[2].1), (CONTINUATION, END_HEADERS));
        let total: usize = relayed.iter().map(|f| f.3.len()).sum();
        assert_eq!(total, block.len());
        assert!(relayed.iter().all(|f| f.3.len() <= MAX_FRAME && f.2 == 7));
    }
}

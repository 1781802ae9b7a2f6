//! WebSocket frames that no well-behaved client library sends, written byte by byte over raw
//! TCP: unmasked, reserved or malformed frames close the socket with 1002, and a message
//! bigger than 4 KiB closes it with 1009, whether it comes in small fragments or one frame
//! announcing a huge length (refused from the header, before any payload). Other sockets are
//! not disturbed.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{DEADLINE, Infra, cast, metric, spawn_result, voter};

const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const FIN: u8 = 0x80;

/// A WebSocket spoken by hand: the handshake, then frames as bytes.
struct RawSocket {
    tcp: TcpStream,
    buffered: Vec<u8>,
}

impl RawSocket {
    /// Opens `/ws` and reads the first snapshot.
    async fn open(addr: SocketAddr) -> RawSocket {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let handshake = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tcp.write_all(handshake.as_bytes()).await.unwrap();
        let mut socket = RawSocket {
            tcp,
            buffered: Vec::new(),
        };
        let head_end = loop {
            if let Some(at) = socket.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(socket.fill().await, "the handshake is answered");
        };
        let head = String::from_utf8_lossy(&socket.buffered[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        socket.buffered.drain(..head_end);
        let (opcode, payload) = socket.frame().await.expect("the first snapshot");
        assert_eq!(opcode, TEXT, "{payload:?}");
        socket
    }

    /// Reads more bytes; false when the connection ended.
    async fn fill(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(DEADLINE, self.tcp.read(&mut buf))
            .await
            .expect("the server sends or closes in time")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffered.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    async fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buffered.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buffered.drain(..n).collect())
    }

    /// The next frame from the server (never masked): opcode and payload.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let head = self.take(2).await?;
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => u16::from_be_bytes(self.take(2).await?.try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(self.take(8).await?.try_into().unwrap()) as usize,
            n => n as usize,
        };
        let payload = self.take(len).await?;
        Some((head[0] & 0x0f, payload))
    }

    /// Reads frames until the server's close frame; its status code.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            let (opcode, payload) = self.frame().await?;
            if opcode == CLOSE {
                return payload
                    .get(..2)
                    .map(|code| u16::from_be_bytes([code[0], code[1]]));
            }
        }
    }

    /// Sends raw bytes; the server may already have closed (a late write can fail).
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.tcp.write_all(bytes).await;
    }
}

/// A client frame: `first` is FIN, RSV and opcode; the payload is masked as clients must.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![first];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn malformed_frames_close_the_socket_with_1002() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    let mut bystander = app.socket().await;
    bystander.next_tally().await;

    let unmasked = vec![FIN | TEXT, 2, b'h', b'i'];
    let cases: [(&str, Vec<u8>); 4] = [
        ("an unmasked frame", unmasked),
        ("a reserved opcode", masked(FIN | 0x3, b"hi")),
        (
            "a reserved bit without an extension",
            masked(FIN | 0x40 | TEXT, b"hi"),
        ),
        ("text that is not UTF-8", masked(FIN | TEXT, b"\xff\xfe")),
    ];
    for (what, frame) in &cases {
        let mut socket = RawSocket::open(app.addr).await;
        socket.send(frame).await;
        assert_eq!(socket.close_code().await, Some(1002), "{what}");
    }

    cast(&infra, &voter(1), "a").await;
    bystander.tally_where("the vote", |t| t.total == 1).await;
    let text = app.get("/metrics").await.body;
    assert_eq!(
        metric(&text, "result_sockets_dropped_total{reason=\"protocol\"}"),
        cases.len() as u64,
        "{text}"
    );
}

#[tokio::test]
async fn a_message_in_small_fragments_is_capped_at_4_kib() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    let mut socket = RawSocket::open(app.addr).await;

    // Five fragments of 1 KiB, each well under the frame limit, together over 4 KiB.
    let fragment = vec![b'x'; 1024];
    socket.send(&masked(TEXT, &fragment)).await;
    for _ in 0..4 {
        socket.send(&masked(CONTINUATION, &fragment)).await;
    }
    socket.send(&masked(FIN | CONTINUATION, &fragment)).await;

    assert_eq!(socket.close_code().await, Some(1009));
    let text = app.get("/metrics").await.body;
    assert_eq!(
        metric(&text, "result_sockets_dropped_total{reason=\"too_large\"}"),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn a_frame_announcing_a_huge_payload_is_refused_before_the_payload() {
    let infra = Infra::database().await.with_schema().await;
    let app = spawn_result(&infra, |f| f).await;
    let mut socket = RawSocket::open(app.addr).await;

    // The header announces 1 GiB; only the header, the mask and a few bytes are ever sent.
    let mut header = vec![FIN | TEXT, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    header.extend_from_slice(b"abc");
    socket.send(&header).await;

    assert_eq!(
        socket.close_code().await,
        Some(1009),
        "refused from the header alone"
    );
}

//! Codec tests: every message round-trips at every split point, golden hex vectors pin
//! the byte layout, and arbitrary bytes never panic the decoder.

use proptest::prelude::*;

use super::*;
use crate::limits::{MAX_BLOCK_LEN, MAX_PEER_NAME_LEN};

fn block(piece: u32, offset: u32, length: u32) -> BlockRef {
    BlockRef {
        piece: PieceNumber(piece),
        offset,
        length,
    }
}

fn samples() -> Vec<Message> {
    vec![
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            capabilities: Capabilities::SEED | Capabilities::STATS,
            peer_id: PeerId([0x11; 16]),
            nonce: [0x22; 32],
        }),
        Message::Join { proof: [0x33; 32] },
        Message::PieceMap {
            piece_count: 10,
            bits: vec![0b1010_0000, 0b0100_0000],
        },
        Message::Have(PieceNumber(7)),
        Message::Request(block(1, 0, 65536)),
        Message::Piece {
            piece: PieceNumber(1),
            offset: 4,
            data: vec![0xab; 3],
        },
        Message::Reject {
            block: block(2, 0, 16),
            reason: RejectReason::NotHeld,
        },
        Message::Cancel(block(2, 16, 16)),
        Message::Choke,
        Message::Unchoke { max_requests: 32 },
        Message::KeepAlive,
        Message::ManifestOffer(b"{}".to_vec()),
        Message::IndexRequest {
            index: [0x44; 32],
            offset: 0,
            length: 36,
        },
        Message::IndexData {
            index: [0x44; 32],
            offset: 0,
            data: vec![],
        },
        Message::Stats(StatsSummary {
            name: "pc-7".into(),
            uptime_secs: 60,
            pieces_held: 3,
            piece_count: 10,
            bytes_from_peers: 1,
            bytes_from_origin: 2,
            bytes_uploaded: 3,
        }),
        Message::TrustOffer(b"{}".to_vec()),
    ]
}

/// Decoding must give the same message whether the bytes arrive whole or split in two
/// at any point, and an incomplete buffer must never decode.
fn assert_round_trips_at_every_split(msg: &Message) {
    let frame = msg.to_frame();
    for split in 0..=frame.len() {
        let mut d = FrameDecoder::new();
        d.push(&frame[..split]);
        if split < frame.len() {
            assert_eq!(
                d.next_message(),
                Ok(None),
                "{msg:?} decoded early at {split}"
            );
            assert!(d.wanted().unwrap() <= frame.len() - split);
        }
        d.push(&frame[split..]);
        assert_eq!(
            d.next_message().as_ref(),
            Ok(&Some(msg.clone())),
            "split at {split}"
        );
        assert_eq!(d.buffered(), 0);
    }
}

#[test]
fn every_message_round_trips_at_every_split_point() {
    for msg in samples() {
        assert_round_trips_at_every_split(&msg);
    }
}

#[test]
fn back_to_back_frames_decode_in_order() {
    let mut d = FrameDecoder::new();
    let all = samples();
    for m in &all {
        d.push(&m.to_frame());
    }
    for m in &all {
        assert_eq!(d.next_message().unwrap().as_ref(), Some(m));
    }
    assert_eq!(d.next_message(), Ok(None));
}

#[test]
fn a_push_of_many_small_frames_is_decoded_in_place() {
    // A private swarm's record can hold ~13,000 KeepAlives: each is taken from a moving
    // position, never by shifting the rest of the buffer (which made a record cost
    // ~430 MB of memory moves).
    let mut d = FrameDecoder::new();
    let mut bytes = Vec::new();
    for _ in 0..13_000 {
        Message::KeepAlive.encode(&mut bytes);
    }
    Message::Have(PieceNumber(3)).encode(&mut bytes);
    let (whole, cut) = bytes.split_at(bytes.len() - 3);
    d.push(whole);
    for _ in 0..13_000 {
        assert_eq!(d.next_message(), Ok(Some(Message::KeepAlive)));
        assert!(d.pos > 0 || d.buf.is_empty(), "taken in place");
    }
    assert_eq!(d.next_message(), Ok(None));
    assert_eq!(d.buffered(), 6);
    assert_eq!(d.wanted(), Ok(3));
    d.push(cut);
    assert_eq!(d.next_message(), Ok(Some(Message::Have(PieceNumber(3)))));
    assert_eq!((d.buffered(), d.buf.len()), (0, 0));
}

/// Parses an annotated hex dump: `#` starts a comment, whitespace is ignored.
fn hex(annotated: &str) -> Vec<u8> {
    let digits: String = annotated
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn golden_vectors() {
    let cases: Vec<(Message, &str)> = vec![
        (
            samples()[0].clone(),
            "0000003b                          # body length 59
             01                                # type Hello
             53484f4c                          # magic 'SHOL'
             0001                              # protocol version 1
             00000005                          # capabilities SEED|STATS
             11111111111111111111111111111111  # peer id
             2222222222222222222222222222222222222222222222222222222222222222 # nonce",
        ),
        (
            samples()[2].clone(),
            "00000007 03     # length 7, PieceMap
             0000000a        # 10 pieces
             a0 40           # pieces 0, 2 and 9; spare bits zero",
        ),
        (
            Message::Have(PieceNumber(7)),
            "00000005 04 00000007   # Have piece 7",
        ),
        (
            samples()[4].clone(),
            "0000000d 05            # length 13, Request
             00000001 00000000 00010000  # piece 1, offset 0, length 65536",
        ),
        (
            samples()[5].clone(),
            "0000000c 06            # length 12, Piece
             00000001 00000004      # piece 1, offset 4
             ababab                 # data",
        ),
        (
            samples()[6].clone(),
            "0000000e 07 00000002 00000000 00000010 01  # Reject piece 2 [0,16) NotHeld",
        ),
        (samples()[8].clone(), "00000001 09   # Choke"),
        (
            samples()[12].clone(),
            "00000029 0e                                                      # length 41, IndexRequest
             4444444444444444444444444444444444444444444444444444444444444444 # index SHA-256
             00000000 00000024                                                # offset 0, length 36",
        ),
        (
            samples()[13].clone(),
            "00000025 0f                                                      # length 37, IndexData
             4444444444444444444444444444444444444444444444444444444444444444 # index SHA-256
             00000000                                                         # offset 0; no data: not held",
        ),
        (
            samples()[9].clone(),
            "00000003 0a 0020   # Unchoke, window 32",
        ),
        (samples()[10].clone(), "00000001 0b   # KeepAlive"),
        (
            samples()[11].clone(),
            "00000003 0c 7b7d   # ManifestOffer '{}'",
        ),
        (
            samples()[15].clone(),
            "00000003 10 7b7d   # TrustOffer '{}'",
        ),
        (
            samples()[14].clone(),
            "0000002e 0d                  # length 46, Stats
             000000000000003c             # uptime 60 s
             00000003 0000000a            # 3 of 10 pieces
             0000000000000001             # from peers
             0000000000000002             # from origin
             0000000000000003             # uploaded
             04 70632d37                  # name 'pc-7'",
        ),
    ];
    for (msg, dump) in cases {
        let bytes = hex(dump);
        assert_eq!(msg.to_frame(), bytes, "{msg:?}");
        assert_eq!(decode_frame(&bytes), Ok(Some((msg, bytes.len()))));
    }
}

#[test]
fn limits_are_checked_before_the_payload_arrives() {
    // A header alone is enough to refuse an over-long frame or a wrongly sized message.
    let too_big = (MAX_FRAME_LEN + 1).to_be_bytes();
    assert_eq!(
        decode_frame(&too_big),
        Err(WireError::FrameTooLarge(MAX_FRAME_LEN + 1))
    );
    let mut d = FrameDecoder::new();
    d.push(&too_big);
    assert!(d.wanted().is_err());
    assert_eq!(decode_frame(&[0, 0, 0, 0]), Err(WireError::EmptyFrame));
    assert_eq!(
        decode_frame(&[0, 0, 0, 9, 0xee]),
        Err(WireError::UnknownType(0xee))
    );
    // A Have that claims 1 MiB is refused from its first five bytes.
    assert!(matches!(
        decode_frame(&[0, 0x10, 0, 0, 0x04]),
        Err(WireError::BadLength {
            ty: MessageType::Have,
            ..
        })
    ));
    // A Piece carrying more than one block.
    let len = 1 + 8 + MAX_BLOCK_LEN + 1;
    let mut b = len.to_be_bytes().to_vec();
    b.push(0x06);
    assert!(matches!(decode_frame(&b), Err(WireError::BadLength { .. })));
}

#[test]
fn before_join_only_handshake_frames_are_buffered() {
    // A full-size Piece header from a stranger: refused from its five bytes.
    let len = 1 + 8 + MAX_BLOCK_LEN;
    let mut b = len.to_be_bytes().to_vec();
    b.push(0x06);
    let mut d = FrameDecoder::for_handshake();
    d.push(&b);
    assert_eq!(d.wanted(), Err(WireError::BeforeJoin(MessageType::Piece)));
    assert_eq!(
        d.next_message(),
        Err(WireError::BeforeJoin(MessageType::Piece))
    );
    // Hello passes, and after the handshake everything does.
    let hello = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities::empty(),
        peer_id: PeerId([1; 16]),
        nonce: [2; 32],
    });
    let mut d = FrameDecoder::for_handshake();
    d.push(&hello.to_frame());
    assert_eq!(d.next_message(), Ok(Some(hello)));
    d.joined();
    d.push(&b);
    assert!(d.wanted().is_ok_and(|n| n as u32 == len - 1));
}

#[test]
fn malformed_payloads_are_refused() {
    let cases: Vec<Vec<u8>> = vec![
        hex("0000003b 01 58584f4c 0001 00000000") // wrong magic (rest padded below)
            .into_iter()
            .chain(std::iter::repeat_n(0, 48))
            .collect(),
        hex("00000007 03 0000000a a0 41"), // spare bit set
        hex("00000007 03 00000011 a0 40"), // count needs 3 bytes
        hex("0000000d 05 00000001 00000000 00000000"), // zero-length request
        hex("0000000e 07 00000002 00000000 00000010 09"), // unknown reject reason
        hex("00000003 0a 0000"),           // zero window
        hex(
            "0000002e 0d 000000000000003c 0000000b 0000000a 0000000000000001 0000000000000002 0000000000000003 04 70632d37",
        ), // held > count
        hex(
            "0000002e 0d 000000000000003c 00000003 0000000a 0000000000000001 0000000000000002 0000000000000003 05 70632d37",
        ), // name length
        hex(
            "0000002e 0d 000000000000003c 00000003 0000000a 0000000000000001 0000000000000002 0000000000000003 04 ff632d37",
        ), // not UTF-8
    ];
    let reasons = [
        "hello does not start with the protocol magic",
        "piece map sets bits past its piece count",
        "piece map length does not match its piece count",
        "block length outside 1..=MAX_BLOCK_LEN",
        "unknown reject reason",
        "unchoke grants a window of zero requests",
        "stats claim more pieces held than exist",
        "stats name length does not match",
        "stats name is not UTF-8",
    ];
    assert_eq!(cases.len(), reasons.len());
    for (bytes, want) in cases.into_iter().zip(reasons) {
        assert!(
            matches!(decode_frame(&bytes), Err(WireError::Malformed { reason, .. }) if reason == want),
            "{bytes:02x?} -> {:?}",
            decode_frame(&bytes)
        );
    }
}

#[test]
fn join_proofs_bind_role_release_and_both_nonces() {
    let r = Digest::of(b"manifest");
    let base = join_proof(Role::Initiator, &r, &[1; 32], &[2; 32]);
    assert_ne!(base, join_proof(Role::Responder, &r, &[1; 32], &[2; 32]));
    assert_ne!(
        base,
        join_proof(Role::Initiator, &Digest::of(b"x"), &[1; 32], &[2; 32])
    );
    assert_ne!(base, join_proof(Role::Initiator, &r, &[3; 32], &[2; 32]));
    assert_ne!(base, join_proof(Role::Initiator, &r, &[1; 32], &[3; 32]));
    assert_eq!(base, join_proof(Role::Initiator, &r, &[1; 32], &[2; 32]));
}

fn arb_block() -> impl Strategy<Value = BlockRef> {
    (any::<u32>(), any::<u32>(), 1..=MAX_BLOCK_LEN).prop_map(|(p, o, l)| block(p, o, l))
}

fn arb_message() -> impl Strategy<Value = Message> {
    let reason = prop_oneof![
        Just(RejectReason::NotHeld),
        Just(RejectReason::Choked),
        Just(RejectReason::Overloaded),
        Just(RejectReason::Invalid),
    ];
    prop_oneof![
        (
            any::<u16>(),
            any::<u32>(),
            any::<[u8; 16]>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(version, caps, id, nonce)| Message::Hello(Hello {
                version,
                capabilities: Capabilities::from_bits_retain(caps),
                peer_id: PeerId(id),
                nonce,
            })),
        any::<[u8; 32]>().prop_map(|proof| Message::Join { proof }),
        proptest::collection::vec(any::<bool>(), 0..200).prop_map(|set| {
            let mut bits = vec![0u8; set.len().div_ceil(8)];
            for (i, _) in set.iter().enumerate().filter(|(_, b)| **b) {
                bits[i / 8] |= 0x80 >> (i % 8);
            }
            Message::PieceMap {
                piece_count: set.len() as u32,
                bits,
            }
        }),
        any::<u32>().prop_map(|p| Message::Have(PieceNumber(p))),
        arb_block().prop_map(Message::Request),
        arb_block().prop_map(Message::Cancel),
        (
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 1..2000)
        )
            .prop_map(|(p, offset, data)| Message::Piece {
                piece: PieceNumber(p),
                offset,
                data
            }),
        (arb_block(), reason).prop_map(|(block, reason)| Message::Reject { block, reason }),
        Just(Message::Choke),
        (1..=u16::MAX).prop_map(|max_requests| Message::Unchoke { max_requests }),
        Just(Message::KeepAlive),
        proptest::collection::vec(any::<u8>(), 1..500).prop_map(Message::ManifestOffer),
        proptest::collection::vec(any::<u8>(), 1..500).prop_map(Message::TrustOffer),
        (any::<[u8; 32]>(), any::<u32>(), 1..=MAX_BLOCK_LEN).prop_map(|(index, offset, length)| {
            Message::IndexRequest {
                index,
                offset,
                length,
            }
        }),
        (
            any::<[u8; 32]>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..600)
        )
            .prop_map(|(index, offset, data)| Message::IndexData {
                index,
                offset,
                data
            }),
        (
            "[a-z0-9é-]{0,20}",
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<[u64; 3]>()
        )
            .prop_filter("name fits", |(n, ..)| n.len() <= MAX_PEER_NAME_LEN)
            .prop_map(
                |(name, uptime_secs, a, b, [p, o, u])| Message::Stats(StatsSummary {
                    name,
                    uptime_secs,
                    pieces_held: a.min(b),
                    piece_count: a.max(b),
                    bytes_from_peers: p,
                    bytes_from_origin: o,
                    bytes_uploaded: u,
                })
            ),
    ]
}

proptest! {
    #[test]
    fn arbitrary_messages_round_trip(msg in arb_message()) {
        let frame = msg.to_frame();
        prop_assert_eq!(decode_frame(&frame), Ok(Some((msg, frame.len()))));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        while let Ok(Some(_)) = d.next_message() {}
        let _ = d.wanted();
    }

    #[test]
    fn mutated_frames_never_panic(msg in arb_message(), at in any::<usize>(), byte in any::<u8>()) {
        let mut frame = msg.to_frame();
        let i = at % frame.len();
        frame[i] = byte;
        let _ = decode_frame(&frame);
    }
}

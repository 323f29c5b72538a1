//! BitTorrent metainfo (`.torrent`) for the lab's BitTorrent baseline: one file, fixed
//! pieces hashed with SHA-1, no tracker (peers meet by local peer discovery) and the
//! origin as a web seed (BEP 19, the `url-list` key).

use std::io::Read;
use std::path::Path;

use sha1::{Digest, Sha1};

/// A bencoded value, enough for metainfo.
enum Bencode<'a> {
    Int(u64),
    Bytes(&'a [u8]),
    /// Keys must be given in sorted order (bencode requires it; `write` checks).
    Dict(Vec<(&'a str, Bencode<'a>)>),
}

fn write(v: &Bencode<'_>, out: &mut Vec<u8>) {
    match v {
        Bencode::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
        Bencode::Bytes(b) => {
            out.extend_from_slice(format!("{}:", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        Bencode::Dict(entries) => {
            assert!(
                entries.windows(2).all(|w| w[0].0 < w[1].0),
                "bencode dictionary keys must be sorted"
            );
            out.push(b'd');
            for (k, v) in entries {
                write(&Bencode::Bytes(k.as_bytes()), out);
                write(v, out);
            }
            out.push(b'e');
        }
    }
}

/// The metainfo of `file` cut into `piece_len`-byte pieces, named `name`, with
/// `web_seed` (the file's full URL) as its only source besides peers.
pub fn metainfo(
    file: &Path,
    name: &str,
    piece_len: u64,
    web_seed: &str,
) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(file)?;
    let length = f.metadata()?.len();
    let mut pieces = Vec::with_capacity(20 * length.div_ceil(piece_len) as usize);
    let mut buf = vec![0u8; piece_len as usize];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match f.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        pieces.extend_from_slice(&Sha1::digest(&buf[..filled]));
        if filled < buf.len() {
            break;
        }
    }
    let info = Bencode::Dict(vec![
        ("length", Bencode::Int(length)),
        ("name", Bencode::Bytes(name.as_bytes())),
        ("piece length", Bencode::Int(piece_len)),
        ("pieces", Bencode::Bytes(&pieces)),
    ]);
    let top = Bencode::Dict(vec![
        ("info", info),
        ("url-list", Bencode::Bytes(web_seed.as_bytes())),
    ]);
    let mut out = Vec::new();
    write(&top, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_single_file_torrent() {
        let dir = crate::TempDir::new("torrent");
        let f = dir.join("a.bin");
        std::fs::write(&f, b"abc").unwrap();
        let t = metainfo(&f, "a.bin", 2, "https://198.18.0.10/a.bin").unwrap();
        let mut want = b"d4:infod6:lengthi3e4:name5:a.bin12:piece lengthi2e6:pieces40:".to_vec();
        want.extend_from_slice(&Sha1::digest(b"ab"));
        want.extend_from_slice(&Sha1::digest(b"c"));
        want.extend_from_slice(b"e8:url-list25:https://198.18.0.10/a.bine");
        assert_eq!(t, want);
        // SHA-1 of "abc" is the FIPS 180 test vector.
        assert_eq!(
            Sha1::digest(b"abc")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}

//! Table-driven tests of trust anchoring and root rotation.

use shoal_protocol::envelope::{DocumentKind, sign};
use shoal_protocol::trust::{Role, TrustBody};
use shoal_protocol::{DocumentError, Name, SecretKey, VerifiedTrust};

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn body(version: u64, roots: &[u8], threshold: u32) -> TrustBody {
    TrustBody {
        product: Name::new("acme-driver").unwrap(),
        version,
        expires: 2_000_000_000,
        root: Role {
            threshold,
            keys: roots.iter().map(|n| key(*n).public()).collect(),
        },
        release: Role {
            threshold: 1,
            keys: vec![key(200).public()],
        },
    }
}

fn signed(b: &TrustBody, signers: &[u8]) -> Vec<u8> {
    let keys: Vec<SecretKey> = signers.iter().map(|n| key(*n)).collect();
    let refs: Vec<&SecretKey> = keys.iter().collect();
    sign(DocumentKind::Trust, &b.to_payload(), &refs)
}

struct Case {
    name: &'static str,
    /// Version 1: root keys, threshold.
    old: (&'static [u8], u32),
    /// Version 2 (or `new_version`): root keys, threshold.
    new: (&'static [u8], u32),
    new_version: u64,
    /// Keys that sign version 2.
    signers: &'static [u8],
    want: Result<(), &'static str>,
}

#[test]
fn root_rotation() {
    let cases = [
        Case {
            name: "1-of-1 rotation to a new key",
            old: (&[1], 1),
            new: (&[2], 1),
            new_version: 2,
            signers: &[1, 2],
            want: Ok(()),
        },
        Case {
            name: "2-of-3 rotating one key",
            old: (&[1, 2, 3], 2),
            new: (&[1, 2, 4], 2),
            new_version: 2,
            signers: &[1, 2],
            want: Ok(()),
        },
        Case {
            name: "2-of-3 rotating one key, signed by the new key and one old",
            old: (&[1, 2, 3], 2),
            new: (&[1, 2, 4], 2),
            new_version: 2,
            signers: &[1, 3, 4],
            want: Ok(()),
        },
        Case {
            name: "rotating all keys",
            old: (&[1, 2, 3], 2),
            new: (&[4, 5, 6], 2),
            new_version: 2,
            signers: &[1, 2, 4, 5],
            want: Ok(()),
        },
        Case {
            name: "threshold up",
            old: (&[1, 2, 3], 1),
            new: (&[1, 2, 3], 3),
            new_version: 2,
            signers: &[1, 2, 3],
            want: Ok(()),
        },
        Case {
            name: "threshold down",
            old: (&[1, 2, 3], 3),
            new: (&[1, 2, 3], 1),
            new_version: 2,
            signers: &[1, 2, 3],
            want: Ok(()),
        },
        Case {
            name: "old threshold missing",
            old: (&[1, 2, 3], 2),
            new: (&[4, 5, 6], 2),
            new_version: 2,
            signers: &[1, 4, 5],
            want: Err("previous root"),
        },
        Case {
            name: "new threshold missing",
            old: (&[1, 2, 3], 2),
            new: (&[4, 5, 6], 2),
            new_version: 2,
            signers: &[1, 2, 4],
            want: Err("root"),
        },
        Case {
            name: "threshold down still needs the old threshold",
            old: (&[1, 2, 3], 3),
            new: (&[1, 2, 3], 1),
            new_version: 2,
            signers: &[1, 2],
            want: Err("previous root"),
        },
        Case {
            name: "version skipped",
            old: (&[1], 1),
            new: (&[2], 1),
            new_version: 3,
            signers: &[1, 2],
            want: Err("version"),
        },
        Case {
            name: "same version replayed",
            old: (&[1], 1),
            new: (&[1], 1),
            new_version: 1,
            signers: &[1],
            want: Err("version"),
        },
        Case {
            name: "duplicated signatures do not add up",
            old: (&[1, 2, 3], 2),
            new: (&[1, 2, 3], 2),
            new_version: 2,
            signers: &[1, 1, 1],
            want: Err("previous root"),
        },
        Case {
            name: "duplicated key ids in the new root role",
            old: (&[1, 2], 2),
            new: (&[3, 3], 2),
            new_version: 2,
            signers: &[1, 2, 3],
            want: Err("malformed"),
        },
        Case {
            name: "threshold above the key count",
            old: (&[1], 1),
            new: (&[2], 2),
            new_version: 2,
            signers: &[1, 2],
            want: Err("malformed"),
        },
    ];
    for c in cases {
        let v1 = body(1, c.old.0, c.old.1);
        let old_signers: Vec<u8> = c.old.0.to_vec();
        let anchor = VerifiedTrust::anchor(&signed(&v1, &old_signers))
            .unwrap_or_else(|e| panic!("{}: anchor refused: {e}", c.name));
        let v2 = body(c.new_version, c.new.0, c.new.1);
        let got = anchor.successor(&signed(&v2, c.signers));
        match (c.want, got) {
            (Ok(()), Ok(t)) => assert_eq!(t.version(), 2, "{}", c.name),
            (Ok(()), Err(e)) => panic!("{}: refused: {e}", c.name),
            (Err(_), Ok(_)) => panic!("{}: accepted", c.name),
            (Err(want), Err(e)) => {
                let ok = match (want, &e) {
                    ("previous root", DocumentError::Threshold { role, .. }) => {
                        *role == "previous root"
                    }
                    ("root", DocumentError::Threshold { role, .. }) => *role == "root",
                    ("version", DocumentError::TrustVersion { .. }) => true,
                    ("malformed", DocumentError::Malformed { .. }) => true,
                    _ => false,
                };
                assert!(ok, "{}: wanted {want}, got {e}", c.name);
            }
        }
    }
}

#[test]
fn anchor_rules() {
    let b = body(1, &[1, 2, 3], 2);
    assert!(VerifiedTrust::anchor(&signed(&b, &[1, 3])).is_ok());
    assert!(matches!(
        VerifiedTrust::anchor(&signed(&b, &[1, 9])),
        Err(DocumentError::Threshold {
            have: 1,
            need: 2,
            ..
        })
    ));
    // A release key cannot sign trust.
    assert!(VerifiedTrust::anchor(&signed(&b, &[1, 200])).is_err());
    // Expiry is separate from the signature check.
    let t = VerifiedTrust::anchor(&signed(&b, &[1, 2])).unwrap();
    assert!(t.check_fresh(1_999_999_999).is_ok());
    assert!(matches!(
        t.check_fresh(2_000_000_000),
        Err(DocumentError::Expired { .. })
    ));
    // Another product cannot rotate in.
    let mut other = body(2, &[1, 2, 3], 2);
    other.product = Name::new("other").unwrap();
    assert!(matches!(
        t.successor(&signed(&other, &[1, 2])),
        Err(DocumentError::WrongProduct { .. })
    ));
    // A key may not hold both roles.
    let mut both = body(1, &[1], 1);
    both.release.keys = vec![key(1).public()];
    assert!(matches!(
        VerifiedTrust::anchor(&signed(&both, &[1])),
        Err(DocumentError::Malformed { .. })
    ));
}

#[test]
fn any_flipped_byte_is_refused() {
    let bytes = signed(&body(1, &[1], 1), &[1]);
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(
            VerifiedTrust::anchor(&b).is_err(),
            "byte {i} flipped still verifies"
        );
    }
}

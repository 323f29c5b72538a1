//! Table-driven tests of the manifest acceptance rules, with the clock passed in.

use shoal_protocol::envelope::{DocumentKind, sign};
use shoal_protocol::index::{INDEX_ENTRY_LEN, INDEX_HEADER_LEN};
use shoal_protocol::manifest::{Acceptance, Artifact, IndexRef, ManifestBody, Platform, accept};
use shoal_protocol::trust::{Role, TrustBody};
use shoal_protocol::{
    ChannelRef, Digest, DocumentError, Name, SecretKey, VerifiedManifest, VerifiedTrust,
};

const NOW: u64 = 1_800_000_000;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn trust(release_keys: &[u8], threshold: u32) -> VerifiedTrust {
    let b = TrustBody {
        product: Name::new("acme").unwrap(),
        version: 1,
        expires: NOW + 1000,
        root: Role {
            threshold: 1,
            keys: vec![key(1).public()],
        },
        release: Role {
            threshold,
            keys: release_keys.iter().map(|n| key(*n).public()).collect(),
        },
    };
    VerifiedTrust::anchor(&sign(DocumentKind::Trust, &b.to_payload(), &[&key(1)])).unwrap()
}

fn artifact(name: &str) -> Artifact {
    Artifact {
        name: Name::new(name).unwrap(),
        platform: Platform {
            os: Name::new("linux").unwrap(),
            arch: Name::new("x86_64").unwrap(),
        },
        length: 10,
        sha256: Digest::of(b"x"),
        index: IndexRef {
            sha256: Digest::of(b"i"),
            length: (INDEX_HEADER_LEN + INDEX_ENTRY_LEN) as u64,
        },
    }
}

fn body(version: u64) -> ManifestBody {
    ManifestBody {
        product: Name::new("acme").unwrap(),
        channel: Name::new("stable").unwrap(),
        version,
        release: "2.4.1".into(),
        created: NOW - 10,
        expires: NOW + 100,
        artifacts: vec![artifact("driver.bin")],
    }
}

fn signed(b: &ManifestBody, signers: &[u8]) -> Vec<u8> {
    let keys: Vec<SecretKey> = signers.iter().map(|n| key(*n)).collect();
    let refs: Vec<&SecretKey> = keys.iter().collect();
    sign(DocumentKind::Manifest, &b.to_payload(), &refs)
}

fn want() -> ChannelRef {
    ChannelRef {
        product: Name::new("acme").unwrap(),
        channel: Name::new("stable").unwrap(),
    }
}

#[test]
fn verification_rules() {
    type Edit = fn(&mut ManifestBody);
    let cases: Vec<(&str, Edit, u64, &str)> = vec![
        ("valid", |_| {}, NOW, "ok"),
        (
            "created just inside the skew",
            |b| {
                b.created = NOW + 300;
                b.expires = NOW + 900;
            },
            NOW,
            "ok",
        ),
        (
            "created 5 min + 1 s ahead",
            |b| {
                b.created = NOW + 301;
                b.expires = NOW + 900;
            },
            NOW,
            "future",
        ),
        ("expired", |b| b.expires = NOW, NOW, "expired"),
        ("expired later", |_| {}, NOW + 100, "expired"),
        (
            "other product",
            |b| b.product = Name::new("evil").unwrap(),
            NOW,
            "product",
        ),
        (
            "other channel",
            |b| b.channel = Name::new("beta").unwrap(),
            NOW,
            "channel",
        ),
        ("no artifacts", |b| b.artifacts.clear(), NOW, "malformed"),
        (
            "duplicate artifact",
            |b| b.artifacts.push(artifact("driver.bin")),
            NOW,
            "malformed",
        ),
        (
            "bad index length",
            |b| b.artifacts[0].index.length = 25,
            NOW,
            "malformed",
        ),
        (
            "empty release label",
            |b| b.release.clear(),
            NOW,
            "malformed",
        ),
        (
            "release label with space",
            |b| b.release = "2 4".into(),
            NOW,
            "malformed",
        ),
        ("version zero", |b| b.version = 0, NOW, "malformed"),
    ];
    let t = trust(&[10], 1);
    for (name, edit, now, expect) in cases {
        let mut b = body(1);
        edit(&mut b);
        let got = VerifiedManifest::verify(&signed(&b, &[10]), &t, &want(), now);
        let ok = matches!(
            (expect, &got),
            ("ok", Ok(_))
                | ("future", Err(DocumentError::FromTheFuture { .. }))
                | ("expired", Err(DocumentError::Expired { .. }))
                | ("product", Err(DocumentError::WrongProduct { .. }))
                | ("channel", Err(DocumentError::WrongChannel { .. }))
                | ("malformed", Err(DocumentError::Malformed { .. }))
        );
        assert!(ok, "{name}: wanted {expect}, got {got:?}");
    }
}

#[test]
fn unsafe_names_are_refused_in_the_signed_body() {
    for bad in ["../etc/passwd", ".hidden", "a/b", "", "x y"] {
        let payload = String::from_utf8(body(1).to_payload())
            .unwrap()
            .replace("\"driver.bin\"", &format!("{bad:?}"));
        let bytes = sign(DocumentKind::Manifest, payload.as_bytes(), &[&key(10)]);
        let got = VerifiedManifest::verify(&bytes, &trust(&[10], 1), &want(), NOW);
        assert!(
            matches!(got, Err(DocumentError::Malformed { .. })),
            "{bad:?}: {got:?}"
        );
    }
}

#[test]
fn release_threshold_and_domain_separation() {
    let t = trust(&[10, 11, 12], 2);
    let b = body(1);
    assert!(VerifiedManifest::verify(&signed(&b, &[10, 12]), &t, &want(), NOW).is_ok());
    for signers in [&[10][..], &[10, 10], &[10, 1], &[1]] {
        assert!(matches!(
            VerifiedManifest::verify(&signed(&b, signers), &t, &want(), NOW),
            Err(DocumentError::Threshold { .. })
        ));
    }
    // A valid trust signature over the same payload does not make a manifest.
    let as_trust = sign(DocumentKind::Trust, &b.to_payload(), &[&key(10), &key(11)]);
    assert!(VerifiedManifest::verify(&as_trust, &t, &want(), NOW).is_err());
}

#[test]
fn oversized_manifest_is_refused_before_parsing() {
    let huge = vec![b'{'; shoal_protocol::limits::MAX_MANIFEST_LEN + 1];
    assert!(matches!(
        VerifiedManifest::verify(&huge, &trust(&[10], 1), &want(), NOW),
        Err(DocumentError::TooLarge { .. })
    ));
}

#[test]
fn acceptance_against_the_floor() {
    let t = trust(&[10], 1);
    let verify = |b: &ManifestBody, t: &VerifiedTrust, k: u8| {
        VerifiedManifest::verify(&signed(b, &[k]), t, &want(), NOW).unwrap()
    };
    let v5 = verify(&body(5), &t, 10);
    let floor = v5.floor();
    assert_eq!(accept(None, &v5), Ok(Acceptance::Newer));
    assert_eq!(accept(Some(&floor), &v5), Ok(Acceptance::Current));
    assert_eq!(
        accept(Some(&floor), &verify(&body(6), &t, 10)),
        Ok(Acceptance::Newer)
    );
    assert_eq!(
        accept(Some(&floor), &verify(&body(4), &t, 10)),
        Err(DocumentError::Rollback { floor: 5, got: 4 })
    );
    let mut other = body(5);
    other.release = "2.4.2".into();
    assert_eq!(
        accept(Some(&floor), &verify(&other, &t, 10)),
        Err(DocumentError::Equivocation { version: 5 })
    );
    // A thief pushed the floor to u64::MAX with a stolen key; after the vendor rotates
    // the release key, version 6 signed by the new key is accepted again.
    let stolen = verify(&body(u64::MAX), &t, 10).floor();
    let rotated = trust(&[11], 1);
    assert_eq!(
        accept(Some(&stolen), &verify(&body(6), &rotated, 11)),
        Ok(Acceptance::Newer)
    );
    assert!(accept(Some(&stolen), &verify(&body(6), &t, 10)).is_err());
}

#[test]
fn expired_trust_authorises_nothing() {
    let t = trust(&[10], 1);
    let bytes = signed(&body(1), &[10]);
    assert!(matches!(
        VerifiedManifest::verify(&bytes, &t, &want(), NOW + 1000),
        Err(DocumentError::Expired { .. })
    ));
}

#[test]
fn a_refresh_keeps_the_content_id_and_a_new_release_changes_it() {
    let v1 = body(1);
    let mut refreshed = body(2);
    refreshed.created += 3600;
    refreshed.expires += 3600;
    assert_eq!(v1.content_id(), refreshed.content_id());
    let mut relabelled = body(2);
    relabelled.release = format!("{}-b", relabelled.release);
    assert_ne!(v1.content_id(), relabelled.content_id());
    let mut other_bytes = body(2);
    other_bytes.artifacts[0].sha256 = Digest::of(b"other");
    assert_ne!(v1.content_id(), other_bytes.content_id());
}

#[test]
fn index_parts_are_taken_in_order_and_never_past_the_signed_length() {
    use shoal_protocol::index::IndexAssembly;
    let b = body(1);
    let a = &b.artifacts[0];
    let len = a.index.length as usize;
    let sha = a.index.sha256.0;
    let mut asm = IndexAssembly::new(&b.artifacts);
    assert!(!asm.push(&sha, 1, &[0]), "a part out of order is ignored");
    assert!(!asm.push(&[7; 32], 0, &[0]), "an unknown index is ignored");
    assert!(
        !asm.push(&sha, 0, &vec![0; len + 1]),
        "more than the manifest says"
    );
    assert!(asm.push(&sha, 0, &vec![0; len - 1]));
    assert!(!asm.is_complete());
    assert!(asm.push(&sha, (len - 1) as u32, &[0]));
    assert!(asm.is_complete());
    assert_eq!(asm.into_parts()[0].len(), len);
}

#[test]
fn an_index_is_checked_against_the_manifest_before_it_is_parsed() {
    use shoal_protocol::index::{IndexCheckError, IndexError, PieceIndex, verify_index};
    let good = PieceIndex::from_pieces([(10, Digest::of(b"x"))]).encode();
    let mut a = artifact("driver.bin");
    a.index.length = good.len() as u64;
    a.index.sha256 = Digest::of(&good);
    assert_eq!(verify_index(&a, &good).unwrap().total_len(), 10);
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(
        verify_index(&a, &longer),
        Err(IndexCheckError::Length { .. })
    ));
    let mut flipped = good.clone();
    flipped[30] ^= 1;
    assert_eq!(verify_index(&a, &flipped), Err(IndexCheckError::Digest));
    let mut short_artifact = a.clone();
    short_artifact.length = 9;
    assert_eq!(
        verify_index(&short_artifact, &good),
        Err(IndexCheckError::Total {
            describes: 10,
            artifact: 9
        })
    );
    let mut bad = good.clone();
    bad[0] = b'X';
    let mut signed_bad = a.clone();
    signed_bad.index.sha256 = Digest::of(&bad);
    assert_eq!(
        verify_index(&signed_bad, &bad),
        Err(IndexCheckError::Format(IndexError::BadHeader))
    );
}

//! Signed public URLs (SDK-CONTRACT.md 5.8): records are signed with a base62 HMAC of the key;
//! key listings and dataset items carry a base64url token `{v}.{expiresAt}.{hmac}`.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const BASE62: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// base62 of the integer value of the first 30 hex digits of HMAC-SHA256(secret, message).
pub fn hmac_base62(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac accepts any key");
    mac.update(message.as_bytes());
    let digest = mac.finalize().into_bytes();
    // 30 hex chars = 15 bytes = 120 bits, fits in u128.
    let mut value: u128 = 0;
    for byte in &digest[..15] {
        value = (value << 8) | u128::from(*byte);
    }
    if value == 0 {
        return "0".to_string();
    }
    let mut out = Vec::new();
    while value > 0 {
        out.push(BASE62[(value % 62) as usize]);
        value /= 62;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// Signature of one record's public URL.
pub fn record_signature(secret: &str, key: &str) -> String {
    hmac_base62(secret, key)
}

/// Checks a record signature (constant time).
pub fn verify_record_signature(secret: &str, key: &str, signature: &str) -> bool {
    let expected = record_signature(secret, key);
    expected.len() == signature.len()
        && expected
            .bytes()
            .zip(signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Signature token for a storage-wide URL (keys listing, dataset items). `expires_at_ms` 0 = never.
pub fn storage_signature(secret: &str, storage_id: &str, expires_at_ms: i64) -> String {
    let h = hmac_base62(secret, &format!("0.{expires_at_ms}.{storage_id}"));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("0.{expires_at_ms}.{h}"))
}

/// Checks a storage-wide signature token (padded or not) against `storage_id`.
pub fn verify_storage_signature(secret: &str, storage_id: &str, token: &str, now_ms: i64) -> bool {
    let trimmed = token.trim_end_matches('=');
    let Ok(decoded) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let mut parts = text.splitn(3, '.');
    let (Some(version), Some(expires), Some(hash)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(expires_at) = expires.parse::<i64>() else {
        return false;
    };
    if expires_at != 0 && expires_at < now_ms {
        return false;
    }
    hmac_base62(secret, &format!("{version}.{expires_at}.{storage_id}")) == hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_signature_matches_contract_vector() {
        assert_eq!(
            record_signature("my-secret-key", "INPUT"),
            "1qensgt6zYUUPspJTGrE3"
        );
        assert!(verify_record_signature(
            "my-secret-key",
            "INPUT",
            "1qensgt6zYUUPspJTGrE3"
        ));
        assert!(!verify_record_signature(
            "my-secret-key",
            "OUTPUT",
            "1qensgt6zYUUPspJTGrE3"
        ));
        assert!(!verify_record_signature("my-secret-key", "INPUT", ""));
    }

    #[test]
    fn storage_signature_matches_contract_vector() {
        let token = storage_signature("my-secret-key", "WkzbQMuFYuamGv3YF", 0);
        assert_eq!(token, "MC4wLjFhT0Jsd1d5OTB5VG5yT29OeDF0OQ");
        assert!(verify_storage_signature(
            "my-secret-key",
            "WkzbQMuFYuamGv3YF",
            &token,
            1
        ));
        assert!(verify_storage_signature(
            "my-secret-key",
            "WkzbQMuFYuamGv3YF",
            "MC4wLjFhT0Jsd1d5OTB5VG5yT29OeDF0OQ==",
            1
        ));
        assert!(!verify_storage_signature(
            "my-secret-key",
            "other",
            &token,
            1
        ));
    }
}

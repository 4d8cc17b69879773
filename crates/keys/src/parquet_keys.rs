//! The key metadata of an encrypted archive file, in the Parquet key-management tools format
//! ("PKMT1", internal storage, single wrapping), so that any reader with that format's KMS hook
//! (pyarrow's `CryptoFactory`, parquet-mr, Spark) finds the file's key with the tenant key alone.
//!
//! A file's footer and columns are encrypted with a random data-encryption key (DEK). The footer
//! key metadata holds that DEK wrapped by the tenant key: base64 of nonce ‖ AES-256-GCM ‖ tag,
//! with the master key identifier (`tenant-<id>`) as associated data.

use base64::Engine as _;

use crate::{DataKey, KeyError, gcm_open, gcm_seal};

/// The identifier under which a tenant's key wraps archive files' keys.
pub fn master_key_identifier(tenant: u32) -> String {
    format!("tenant-{tenant}")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyMaterial {
    #[serde(rename = "keyMaterialType")]
    key_material_type: String,
    #[serde(rename = "internalStorage")]
    internal_storage: bool,
    #[serde(rename = "isFooterKey")]
    is_footer_key: bool,
    #[serde(rename = "kmsInstanceID", default)]
    kms_instance_id: String,
    #[serde(rename = "kmsInstanceURL", default)]
    kms_instance_url: String,
    #[serde(rename = "masterKeyID")]
    master_key_id: String,
    #[serde(rename = "wrappedDEK")]
    wrapped_dek: String,
    #[serde(rename = "doubleWrapping")]
    double_wrapping: bool,
}

/// Footer key metadata for a file of `tenant` whose key is `dek`.
pub fn footer_key_metadata(
    tenant: u32,
    tenant_key: &DataKey,
    dek: &DataKey,
) -> Result<Vec<u8>, KeyError> {
    let id = master_key_identifier(tenant);
    let wrapped = gcm_seal(tenant_key.bytes(), id.as_bytes(), dek.bytes())?;
    let material = KeyMaterial {
        key_material_type: "PKMT1".into(),
        internal_storage: true,
        is_footer_key: true,
        kms_instance_id: "DEFAULT".into(),
        kms_instance_url: "DEFAULT".into(),
        master_key_id: id,
        wrapped_dek: base64::engine::general_purpose::STANDARD.encode(wrapped),
        double_wrapping: false,
    };
    Ok(serde_json::to_vec(&material).expect("plain struct serialises"))
}

/// The tenant a file's footer key metadata names.
pub fn tenant_of(metadata: &[u8]) -> Result<u32, KeyError> {
    let material = parse(metadata)?;
    material
        .master_key_id
        .strip_prefix("tenant-")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            KeyError::invalid(
                "archive file key metadata",
                format!(
                    "master key id {:?} is not tenant-<number>",
                    material.master_key_id
                ),
            )
        })
}

fn parse(metadata: &[u8]) -> Result<KeyMaterial, KeyError> {
    let material: KeyMaterial = serde_json::from_slice(metadata).map_err(|e| {
        KeyError::invalid(
            "archive file key metadata",
            format!("not PKMT1 key material: {e}"),
        )
    })?;
    if material.key_material_type != "PKMT1" || !material.internal_storage {
        return Err(KeyError::invalid(
            "archive file key metadata",
            "only internally stored PKMT1 key material is supported",
        ));
    }
    if material.double_wrapping {
        return Err(KeyError::invalid(
            "archive file key metadata",
            "double wrapping is not supported",
        ));
    }
    Ok(material)
}

/// Unwraps a file's DEK from its footer key metadata with the tenant key.
pub fn unwrap_file_key(metadata: &[u8], tenant_key: &DataKey) -> Result<DataKey, KeyError> {
    let material = parse(metadata)?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&material.wrapped_dek)
        .map_err(|e| KeyError::invalid("archive file key metadata", format!("wrappedDEK: {e}")))?;
    let what = format!(
        "the archive file's key (wrapped by {})",
        material.master_key_id
    );
    let plain = gcm_open(
        tenant_key.bytes(),
        material.master_key_id.as_bytes(),
        &sealed,
        &what,
    )?;
    DataKey::from_slice(&plain, &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_unwrap_with_the_tenant_key_only() {
        let tenant = DataKey::generate().unwrap();
        let dek = DataKey::generate().unwrap();
        let meta = footer_key_metadata(3, &tenant, &dek).unwrap();
        assert_eq!(tenant_of(&meta).unwrap(), 3);
        assert_eq!(unwrap_file_key(&meta, &tenant).unwrap(), dek);
        let wrong = DataKey::generate().unwrap();
        let e = unwrap_file_key(&meta, &wrong).unwrap_err();
        assert!(e.to_string().contains("wrong key"), "{e}");
        assert!(unwrap_file_key(b"{}", &tenant).is_err());
        assert!(tenant_of(b"not json").is_err());
    }
}

//! Sealing, opening, rewrapping and re-keying a record (v1 format).
//!
//! ```text
//! AAD_body = "zkvault:v1:record-body" || lp(ns) || lp(record_name) || lp(record_id)
//! AAD_dek  = "zkvault:v1:record-dek"  || lp(ns) || lp(BI) || lp(record_name) || lp(record_id) || u32be(dm_version)
//! wrapped_dek     = XChaCha20-Poly1305(RK,  dek_nonce,  AAD_dek,  DEK)
//! body_ciphertext = XChaCha20-Poly1305(DEK, body_nonce, AAD_body, body)
//! ```
//! The body's AAD leaves out the blind index and the master version, so moving a record to
//! another master (or re-indexing it) rewraps 48 bytes and never touches the body.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::encoding::labelled;
use crate::keys::{BlindIndex, Dek, ResidentKey, Secret32};
use crate::{random, CryptoError, IntegrityError};

pub const FORMAT_V1: u8 = 1;
pub const NONCE_LEN: usize = 24;
pub const WRAPPED_DEK_LEN: usize = 48;

/// Where a record lives: every field is bound into its AAD.
pub struct RecordContext<'a> {
    pub namespace: &'a str,
    pub blind_index: &'a BlindIndex,
    pub record_name: &'a str,
    /// The record's UUID, fixed for its whole life.
    pub record_id: &'a [u8; 16],
}

impl RecordContext<'_> {
    fn body_aad(&self) -> Vec<u8> {
        labelled(
            "zkvault:v1:record-body",
            &[
                self.namespace.as_bytes(),
                self.record_name.as_bytes(),
                self.record_id,
            ],
        )
    }

    fn dek_aad(&self, master_version: u32) -> Vec<u8> {
        let mut aad = labelled(
            "zkvault:v1:record-dek",
            &[
                self.namespace.as_bytes(),
                self.blind_index.as_bytes(),
                self.record_name.as_bytes(),
                self.record_id,
            ],
        );
        aad.extend_from_slice(&master_version.to_be_bytes());
        aad
    }
}

/// A record's DEK, wrapped under the resident key of one master version.
#[derive(Clone, PartialEq, Eq)]
pub struct DekEnvelope {
    pub master_version: u32,
    pub nonce: [u8; NONCE_LEN],
    pub wrapped: [u8; WRAPPED_DEK_LEN],
}

impl DekEnvelope {
    /// Rebuilds an envelope from its stored columns, refusing fields of the wrong length.
    pub fn from_stored(
        master_version: u32,
        nonce: &[u8],
        wrapped: &[u8],
    ) -> Result<Self, CryptoError> {
        Ok(DekEnvelope {
            master_version,
            nonce: nonce
                .try_into()
                .map_err(|_| CryptoError::Malformed("dek nonce length"))?,
            wrapped: wrapped
                .try_into()
                .map_err(|_| CryptoError::Malformed("wrapped dek length"))?,
        })
    }
}

/// A record as stored: format version, DEK envelope, body nonce and ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRecord {
    pub dek: DekEnvelope,
    pub body_nonce: [u8; NONCE_LEN],
    pub body_ciphertext: Vec<u8>,
}

impl SealedRecord {
    /// Rebuilds a record from its stored columns, refusing unknown format versions and
    /// fields of the wrong length.
    pub fn from_stored(
        format: u8,
        master_version: u32,
        dek_nonce: &[u8],
        wrapped_dek: &[u8],
        body_nonce: &[u8],
        body_ciphertext: Vec<u8>,
    ) -> Result<Self, CryptoError> {
        if format != FORMAT_V1 {
            return Err(CryptoError::UnsupportedFormat(format));
        }
        if body_ciphertext.len() < 16 {
            return Err(CryptoError::Malformed(
                "body ciphertext shorter than its tag",
            ));
        }
        Ok(SealedRecord {
            dek: DekEnvelope::from_stored(master_version, dek_nonce, wrapped_dek)?,
            body_nonce: body_nonce
                .try_into()
                .map_err(|_| CryptoError::Malformed("body nonce length"))?,
            body_ciphertext,
        })
    }

    pub fn format(&self) -> u8 {
        FORMAT_V1
    }
}

fn cipher(key: &Secret32) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.expose().into())
}

fn wrap_dek(
    rk: &ResidentKey,
    master_version: u32,
    ctx: &RecordContext,
    dek: &Dek,
    nonce: [u8; NONCE_LEN],
) -> DekEnvelope {
    let aad = ctx.dek_aad(master_version);
    let wrapped = cipher(rk.secret())
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: dek.0.expose(),
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption of 32 bytes cannot fail");
    DekEnvelope {
        master_version,
        nonce,
        wrapped: wrapped.try_into().expect("32-byte DEK + 16-byte tag"),
    }
}

fn unwrap_dek(
    rk: &ResidentKey,
    ctx: &RecordContext,
    env: &DekEnvelope,
) -> Result<Dek, IntegrityError> {
    let aad = ctx.dek_aad(env.master_version);
    let plain = Zeroizing::new(
        cipher(rk.secret())
            .decrypt(
                &XNonce::from(env.nonce),
                Payload {
                    msg: &env.wrapped,
                    aad: &aad,
                },
            )
            .map_err(|_| IntegrityError)?,
    );
    Ok(Dek(Secret32::from_slice(&plain).ok_or(IntegrityError)?))
}

/// Seals `body` under a fresh random DEK and fresh random nonces.
pub fn seal(
    rk: &ResidentKey,
    master_version: u32,
    ctx: &RecordContext,
    body: &[u8],
) -> Result<SealedRecord, CryptoError> {
    Ok(seal_with(
        rk,
        master_version,
        ctx,
        &Dek::generate()?,
        random::array()?,
        random::array()?,
        body,
    ))
}

/// Seals with a given DEK and nonces. Deterministic: callers outside known-answer tests use
/// [`seal`], which draws all three from the OS CSPRNG.
pub fn seal_with(
    rk: &ResidentKey,
    master_version: u32,
    ctx: &RecordContext,
    dek: &Dek,
    dek_nonce: [u8; NONCE_LEN],
    body_nonce: [u8; NONCE_LEN],
    body: &[u8],
) -> SealedRecord {
    let aad = ctx.body_aad();
    let body_ciphertext = cipher(&dek.0)
        .encrypt(
            &XNonce::from(body_nonce),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail below 256 GiB");
    SealedRecord {
        dek: wrap_dek(rk, master_version, ctx, dek, dek_nonce),
        body_nonce,
        body_ciphertext,
    }
}

/// Opens a record. Any mismatch (key, context, master version, a flipped byte) is the one
/// opaque [`IntegrityError`].
pub fn open(
    rk: &ResidentKey,
    ctx: &RecordContext,
    sealed: &SealedRecord,
) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
    let dek = unwrap_dek(rk, ctx, &sealed.dek)?;
    let aad = ctx.body_aad();
    cipher(&dek.0)
        .decrypt(
            &XNonce::from(sealed.body_nonce),
            Payload {
                msg: &sealed.body_ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| IntegrityError)
}

/// Moves a record's DEK from one master to another: unwraps it with `from`, wraps it with `to`
/// under a fresh nonce. Only the 48-byte envelope is involved: the body is neither needed nor
/// touched.
pub fn rewrap(
    from: &ResidentKey,
    to: &ResidentKey,
    to_version: u32,
    ctx: &RecordContext,
    dek: &DekEnvelope,
) -> Result<DekEnvelope, CryptoError> {
    let dek = unwrap_dek(from, ctx, dek)?;
    Ok(wrap_dek(to, to_version, ctx, &dek, random::array()?))
}

/// Re-keys a record: opens it with `from`, then seals the body afresh (new DEK, new nonces)
/// under `to`. Used when the old master may be exposed, since its holder may hold the old DEK.
pub fn rekey(
    from: &ResidentKey,
    to: &ResidentKey,
    to_version: u32,
    ctx: &RecordContext,
    sealed: &SealedRecord,
) -> Result<SealedRecord, CryptoError> {
    let body = open(from, ctx, sealed)?;
    seal(to, to_version, ctx, &body)
}

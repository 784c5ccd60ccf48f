//! zkvault's crypto core: the v1 key hierarchy and byte formats of `docs/design.md`.
//!
//! Pure computation: no I/O, no async runtime, no database. Everything above it (keystores,
//! storage, HTTP) calls in here for every byte that is derived, sealed or opened.
//!
//! Secret types ([`DerivationMaster`], [`IndexKey`], [`ResidentKey`], [`Dek`], [`Secret32`],
//! [`ResidentId`]) zeroize on drop and implement neither `Debug`, `Clone` nor `Serialize`.

pub mod audit;
mod encoding;
mod error;
mod keys;
pub mod random;
mod record;
mod resident_id;
pub mod verhoeff;
mod wrap_context;

pub use error::{CryptoError, IntegrityError};
pub use keys::{
    BlindIndex, Dek, DerivationMaster, IndexKey, IntegrityKey, ResidentKey, Secret32, SALT_LEN,
};
pub use record::{
    open, rekey, rewrap, seal, seal_with, DekEnvelope, RecordContext, SealedRecord, FORMAT_V1,
    NONCE_LEN, WRAPPED_DEK_LEN,
};
pub use resident_id::{ChecksumScheme, ResidentId, ResidentIdError, RESIDENT_ID_PATTERN};
pub use wrap_context::{KeyKind, WrapContext};

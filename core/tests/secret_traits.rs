//! Secret types can be neither printed, cloned nor serialised: these assertions fail to compile
//! if anyone derives one of those traits on them.

use static_assertions::assert_not_impl_any;
use zkvault_core::{
    Dek, DerivationMaster, IndexKey, IntegrityKey, ResidentId, ResidentKey, Secret32,
};

assert_not_impl_any!(Secret32: std::fmt::Debug, std::fmt::Display, Clone, Copy);
assert_not_impl_any!(DerivationMaster: std::fmt::Debug, std::fmt::Display, Clone, Copy);
assert_not_impl_any!(IndexKey: std::fmt::Debug, std::fmt::Display, Clone, Copy);
assert_not_impl_any!(IntegrityKey: std::fmt::Debug, std::fmt::Display, Clone, Copy);
assert_not_impl_any!(ResidentKey: std::fmt::Debug, std::fmt::Display, Clone, Copy);
assert_not_impl_any!(Dek: std::fmt::Debug, std::fmt::Display, Clone, Copy);
assert_not_impl_any!(ResidentId: std::fmt::Debug, std::fmt::Display, Clone, Copy);
assert_not_impl_any!(zkvault_core::BlindIndex: std::fmt::Debug, std::fmt::Display);

// The library does not depend on serde at all; should someone add it, this catches a derive.
assert_not_impl_any!(Secret32: serde::Serialize);
assert_not_impl_any!(DerivationMaster: serde::Serialize);
assert_not_impl_any!(IndexKey: serde::Serialize);
assert_not_impl_any!(IntegrityKey: serde::Serialize);
assert_not_impl_any!(ResidentKey: serde::Serialize);
assert_not_impl_any!(Dek: serde::Serialize);
assert_not_impl_any!(ResidentId: serde::Serialize);

#[test]
fn secrets_have_no_printing_cloning_or_serialising_traits() {
    // The assertions above are checked at compile time; this test makes the suite list them.
}

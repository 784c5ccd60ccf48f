//! Secrets the service handles as text: the soft keystore's passphrase, an HSM PIN, API tokens.
//!
//! [`SecretString`] is zeroized when dropped and implements neither `Debug`, `Display`, `Clone`
//! nor `Serialize`, so it cannot reach a log line, an error or a response body by accident, in
//! this crate as in the core's key types. [`SecretString::expose`] is the one way to read it.

use zeroize::Zeroizing;

pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(text: impl Into<String>) -> Self {
        SecretString(Zeroizing::new(text.into()))
    }

    /// The secret itself, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::SecretString;
    use crate::keystore::pkcs11::Pkcs11Config;
    use crate::vault::IssuedCredential;
    use static_assertions::assert_not_impl_any;

    // Checked at compile time: deriving one of these on a secret fails the build.
    assert_not_impl_any!(SecretString: std::fmt::Debug, std::fmt::Display, Clone, serde::Serialize);
    assert_not_impl_any!(Pkcs11Config: std::fmt::Debug, std::fmt::Display, Clone, serde::Serialize);
    assert_not_impl_any!(IssuedCredential: std::fmt::Debug, std::fmt::Display, Clone, serde::Serialize);

    #[test]
    fn exposes_only_on_request() {
        assert_eq!(SecretString::new("s3cret").expose(), "s3cret");
    }
}

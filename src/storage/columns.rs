//! Typed text columns: key states and credential roles are written as their `Display` text and
//! read back through `FromStr`, on both backends and through [`AnyConnection`]. The stored text
//! is what it always was; text that names no value fails the read with
//! [`StorageError::Corrupt`](super::StorageError::Corrupt).
//!
//! [`AnyConnection`]: super::conn::AnyConnection

use std::io::Write;

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::pg::Pg;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;

use super::conn::MultiBackend;
use crate::states::{KekState, MasterState, Roles, SignerState};

macro_rules! text_column {
    ($($t:ty),*) => {$(
        impl ToSql<Text, Pg> for $t {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                write!(out, "{self}")?;
                Ok(IsNull::No)
            }
        }

        impl ToSql<Text, Sqlite> for $t {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
                out.set_value(self.to_string());
                Ok(IsNull::No)
            }
        }

        /// Hands the value to the connection's own backend (one of the two above).
        impl ToSql<Text, MultiBackend> for $t {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
                out.set_value((Text, self));
                Ok(IsNull::No)
            }
        }

        impl<DB: Backend> FromSql<Text, DB> for $t
        where
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                Ok(String::from_sql(bytes)?.parse()?)
            }
        }
    )*};
}

text_column!(MasterState, KekState, Roles, SignerState);

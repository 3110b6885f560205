//! Snowflake options and the target (`snowflake://ACCOUNT/DATABASE/SCHEMA`).

use std::fmt;

use serde::Deserialize;

use super::super::secrets::Secret;

/// The Snowflake destination's own options (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SnowflakeOptions {
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// PEM text of an unencrypted PKCS#8 (or PKCS#1) RSA key, usually `file:PATH`.
    pub private_key: Option<Secret>,
    pub warehouse: Option<String>,
    pub role: Option<String>,
    /// Table for events of a non-warehouse schema.
    pub table: Option<String>,
}

/// `ACCOUNT/DATABASE/SCHEMA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnowflakeTarget {
    /// The account identifier as given (`myorg-myaccount`, `xy12345.us-east-1`).
    pub account: String,
    pub database: String,
    pub schema: String,
}

impl SnowflakeTarget {
    pub fn parse(target: &str) -> Result<Self, String> {
        match target.split('/').collect::<Vec<_>>().as_slice() {
            [account, database, schema]
                if !account.is_empty() && !database.is_empty() && !schema.is_empty() =>
            {
                if !account
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(format!("`{account}` is not a Snowflake account identifier"));
                }
                Ok(SnowflakeTarget {
                    account: (*account).to_string(),
                    database: (*database).to_string(),
                    schema: (*schema).to_string(),
                })
            }
            _ => Err(format!(
                "`{target}` is not a schema: use snowflake://ACCOUNT/DATABASE/SCHEMA"
            )),
        }
    }

    /// The account name the login and the JWT carry: the part before any region or cloud
    /// (`xy12345` of `xy12345.us-east-1`), upper case.
    pub fn account_name(&self) -> String {
        self.account
            .split('.')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase()
    }

    /// `https://ACCOUNT.snowflakecomputing.com`.
    pub fn public_endpoint(&self) -> String {
        format!("https://{}.snowflakecomputing.com", self.account)
    }
}

impl fmt::Display for SnowflakeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Snowflake schema `{}.{}` (account `{}`)",
            self.database, self.schema, self.account
        )
    }
}

/// An identifier as Snowflake resolves it unquoted (letters, digits, `_`, `$`; stored upper
/// case), quoted so it can be any text: `flags` → `"FLAGS"`, `My Schema` → `"My Schema"`.
pub fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$'));
    let stored = if plain {
        name.to_ascii_uppercase()
    } else {
        name.to_string()
    };
    format!("\"{}\"", stored.replace('"', "\"\""))
}

/// The identifier as `information_schema` stores it (unquoted: upper case).
pub fn stored_ident(name: &str) -> String {
    let quoted = ident(name);
    quoted[1..quoted.len() - 1].replace("\"\"", "\"")
}

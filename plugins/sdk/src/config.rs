//! Reading `[plugin.config]` with serde (feature `json`).

use alloc::format;
use serde::de::DeserializeOwned;

use crate::InitError;

/// Parses the config JSON that [`Filter::init`](crate::Filter::init) gets
/// into `T`. An empty (or all-blank) config reads as `{}`, so a
/// `#[serde(default)]` struct works for a plugin loaded without
/// `[plugin.config]`. Errors name the problem for the operator.
///
/// ```
/// #[derive(serde::Deserialize)]
/// #[serde(default, deny_unknown_fields)]
/// struct Config { limit: u32 }
/// impl Default for Config { fn default() -> Self { Config { limit: 10 } } }
///
/// let c: Config = sluice_plugin_sdk::config::from_json("").unwrap();
/// assert_eq!(c.limit, 10);
/// let c: Config = sluice_plugin_sdk::config::from_json(r#"{"limit": 3}"#).unwrap();
/// assert_eq!(c.limit, 3);
/// assert!(sluice_plugin_sdk::config::from_json::<Config>(r#"{"limt": 3}"#).is_err());
/// ```
pub fn from_json<T: DeserializeOwned>(config: &str) -> Result<T, InitError> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    serde_json::from_str(text).map_err(|e| InitError::new(format!("invalid [plugin.config]: {e}")))
}

//! The strict YAML config.
//!
//! Pipeline: read the file and its `extends:` chain into located nodes (`yaml`, `load`) →
//! deserialize into the typed tree (`schema`) through a strict deserializer (`de`) that rejects
//! every unknown key with its dotted path, `file:line` and a suggestion or migration message
//! (`migrate`) → cross-field checks (`coherence`). Nothing is done with a config that fails any
//! step, and all problems of a step are reported together.

mod coherence;
mod de;
mod load;
mod migrate;
pub mod schema;
mod show;
pub mod yaml;

pub use coherence::origin_of;
pub use schema::Config;

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// A validated config together with the merged source tree it came from (for provenance).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub tree: yaml::Node,
}

impl Loaded {
    /// The resolved config as annotated YAML: every leaf with the `file:line` it came from, or
    /// `default` when no file set it.
    pub fn show(&self) -> String {
        show::render(&self.config, &self.tree)
    }

    /// The resolved config as plain YAML (what a run directory stores as `config.resolved.yaml`).
    pub fn resolved_yaml(&self) -> String {
        show::render_plain(&self.config)
    }
}

/// Load, validate and check a config file.
pub fn load(path: &Path) -> Result<Loaded> {
    let tree = load::load_tree(path)?;
    let config = from_tree(&tree)?;
    if let Some(e) = Error::many(coherence::check(&config, &tree)) {
        return Err(e);
    }
    Ok(Loaded { config, tree })
}

/// Parse a config from a YAML string (no `extends:` resolution); `name` labels error locations.
pub fn from_str(src: &str, name: &str) -> Result<Config> {
    let tree = yaml::parse(src, Path::new(name))?;
    if tree.get("extends").is_some() {
        return Err(Error::input("`extends:` needs a config file on disk")
            .at(name.to_string())
            .hint("load the config with `config::load(path)`"));
    }
    let config = from_tree(&tree)?;
    if let Some(e) = Error::many(coherence::check(&config, &tree)) {
        return Err(e);
    }
    Ok(config)
}

fn from_tree(tree: &yaml::Node) -> Result<Config> {
    let collected = de::Collected::default();
    let parsed = Config::deserialize(de::NodeDe::root(tree, &collected));
    let mut errors = collected.errors.into_inner();
    match parsed {
        // Unknown keys first (in file order), then the first type error, if any.
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(Error::many(errors).unwrap_or_else(|| Error::runtime("internal: no errors"))),
        Err(e) => {
            errors.push(e.0);
            Err(Error::many(errors).unwrap_or_else(|| Error::runtime("internal: no errors")))
        }
    }
}

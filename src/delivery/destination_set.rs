//! The set of destinations while running: two sources, one engine.
//!
//! * **config** destinations come from `--dest` and the `--config` file's `[[destination]]`
//!   tables (or the embedded default). They change only when the file is reloaded
//!   ([`DestinationSet::reload`], on SIGHUP); the API refuses to change them (409
//!   `managed_by_config`), because the next reload would undo it.
//! * **api** destinations are created, changed and deleted through the admin API and
//!   persisted in `<data-dir>/destinations.json` ([`super::destination_store`]).
//!
//! ## Invariants
//!
//! * Names are unique across both sources. At start a name in both is an error naming both;
//!   at runtime a create (or a reload adding the name) is refused with a conflict.
//! * Everything is validated before anything changes: a request or reload that fails
//!   validation leaves the engine, the store and the cursors as they were.
//! * One change at a time (an async mutex): the engine never sees two changes of one name
//!   interleaved, and the store is written in the order changes are applied.
//! * Update keeps the cursor (the worker restarts after settling or abandoning its in-flight
//!   batches); delete — and a reload dropping a config destination — releases the cursor so
//!   WAL garbage collection proceeds, and a destination created later under that name starts
//!   afresh.
//! * Secret values never enter through the API: an option that would be shown as `***`
//!   (an inline secret) is refused; only `env:` / `file:` references are accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::destination_store::{ApiDestination, DestinationStore, StoreError};
use super::{configure, Delivery, DeliveryDefaults, DeliveryError, DestinationStatus};
use crate::delivery::ConfiguredDestination;
use crate::dest::{secrets, DestinationSpec};

/// Where a destination is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `--dest` or the `--config` file.
    Config,
    /// The admin API (`destinations.json` in the data dir).
    Api,
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::Config => "--dest/--config",
            Source::Api => "the admin API",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// Bad input; names the option. Nothing changed.
    #[error("{0}")]
    Invalid(String),
    #[error("a destination named `{name}` already exists (defined by {})", source_kind.describe())]
    Conflict { name: String, source_kind: Source },
    #[error("destination `{0}` is defined by --dest/--config: change it there and reload the configuration (SIGHUP)")]
    ManagedByConfig(String),
    #[error("no destination named `{0}`")]
    Unknown(String),
    #[error("saving the API destinations: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// A destination as the API shows it: where it is defined, and its status.
#[derive(Debug, Clone, Serialize)]
pub struct SourcedStatus {
    pub source: Source,
    #[serde(flatten)]
    pub status: DestinationStatus,
}

/// What a reload changed, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
}

/// The destinations to start with and the set's initial state (see [`configure_startup`]).
pub struct Startup {
    pub configured: Vec<ConfiguredDestination>,
    state: SetState,
}

#[derive(Debug, Clone, Default)]
struct SetState {
    /// Config destinations by name, as written (the `name` option taken out).
    config: BTreeMap<String, DestinationSpec>,
    /// API destinations in creation order.
    api: Vec<ApiDestination>,
}

impl SetState {
    fn sources(&self) -> BTreeMap<String, Source> {
        let config = self
            .config
            .keys()
            .map(|name| (name.clone(), Source::Config));
        let api = self
            .api
            .iter()
            .map(|entry| (entry.name.clone(), Source::Api));
        config.chain(api).collect()
    }

    fn source_of(&self, name: &str) -> Option<Source> {
        if self.config.contains_key(name) {
            Some(Source::Config)
        } else if self.api.iter().any(|entry| entry.name == name) {
            Some(Source::Api)
        } else {
            None
        }
    }
}

fn count_changes(action: &'static str, count: usize) {
    metrics::counter!(crate::metrics::DESTINATION_CHANGES_TOTAL, "action" => action)
        .increment(count as u64);
}

/// Build the starting destinations: the config specs (`--dest`, file, or the default) and the
/// stored API ones. A config error is [`SetError::Invalid`] naming the spec; a stored entry's
/// error names the store file; a name in both sources is an error naming both.
pub async fn configure_startup(
    config_specs: Vec<DestinationSpec>,
    store: &DestinationStore,
    defaults: &DeliveryDefaults,
    data_dir: &Path,
) -> Result<Startup, SetError> {
    let (config, mut configured) = configure_config(config_specs, defaults, data_dir).await?;
    let api = store.load()?;
    for entry in &api {
        if config.contains_key(&entry.name) {
            return Err(SetError::Invalid(format!(
                "destination `{}` is defined both by --dest/--config and by the admin API \
                 (stored in {}): rename or remove one of them",
                entry.name,
                store.path().display()
            )));
        }
        let built = configure_api(entry, defaults, data_dir)
            .await
            .map_err(|err| SetError::Invalid(format!("{}: {err}", store.path().display())))?;
        configured.push(built);
    }
    Ok(Startup {
        configured,
        state: SetState { config, api },
    })
}

/// Name and build the config specs together (automatic names depend on each other).
async fn configure_config(
    specs: Vec<DestinationSpec>,
    defaults: &DeliveryDefaults,
    data_dir: &Path,
) -> Result<
    (
        BTreeMap<String, DestinationSpec>,
        Vec<ConfiguredDestination>,
    ),
    SetError,
> {
    let mut named = specs.clone();
    let names =
        super::assign_names(&mut named).map_err(|err| SetError::Invalid(err.to_string()))?;
    let configured = configure(specs, defaults, data_dir)
        .await
        .map_err(|err| SetError::Invalid(err.to_string()))?;
    Ok((names.into_iter().zip(named).collect(), configured))
}

/// Build one API destination, refusing inline secrets.
async fn configure_api(
    entry: &ApiDestination,
    defaults: &DeliveryDefaults,
    data_dir: &Path,
) -> Result<ConfiguredDestination, SetError> {
    let spec = entry.spec().map_err(SetError::Invalid)?;
    let mut configured = configure(vec![spec], defaults, data_dir)
        .await
        .map_err(|err| SetError::Invalid(err.to_string()))?;
    let built = configured.pop().ok_or_else(|| {
        SetError::Invalid(format!("destination `{}` could not be built", entry.name))
    })?;
    if let Some((option, _)) = built
        .settings
        .shown_options
        .iter()
        .find(|(_, shown)| shown.as_str() == secrets::REDACTED)
    {
        return Err(SetError::Invalid(format!(
            "option `{option}` is a secret: the admin API takes it only as a reference, \
             `env:NAME` or `file:PATH`, never the value itself"
        )));
    }
    Ok(built)
}

/// An extra check of built destinations (the binary's cross-flag limits); `Err` names the
/// problem and refuses the change.
pub type Check = Box<dyn Fn(&[ConfiguredDestination]) -> Result<(), String> + Send + Sync>;

/// The running set: the engine plus both sources. Shared by the admin API and the reload.
pub struct DestinationSet {
    delivery: Delivery,
    check: Check,
    defaults: DeliveryDefaults,
    data_dir: PathBuf,
    store: DestinationStore,
    state: tokio::sync::Mutex<SetState>,
    /// Where each name is defined, as of the last change (read without waiting for one).
    sources: std::sync::Mutex<BTreeMap<String, Source>>,
}

impl DestinationSet {
    /// The set `delivery` was started with (from [`configure_startup`]).
    pub fn new(
        delivery: Delivery,
        startup_state: Startup,
        defaults: DeliveryDefaults,
        data_dir: &Path,
    ) -> Self {
        DestinationSet {
            delivery,
            check: Box::new(|_| Ok(())),
            defaults,
            data_dir: data_dir.to_path_buf(),
            store: DestinationStore::new(data_dir),
            sources: std::sync::Mutex::new(startup_state.state.sources()),
            state: tokio::sync::Mutex::new(startup_state.state),
        }
    }

    /// Run `check` on every destination before it is added or changed.
    pub fn with_check(mut self, check: Check) -> Self {
        self.check = check;
        self
    }

    async fn configure_api(
        &self,
        entry: &ApiDestination,
    ) -> Result<ConfiguredDestination, SetError> {
        let built = configure_api(entry, &self.defaults, &self.data_dir).await?;
        (self.check)(std::slice::from_ref(&built)).map_err(SetError::Invalid)?;
        Ok(built)
    }

    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Where `name` is defined, if anywhere (as of the last completed change).
    pub fn source_of(&self, name: &str) -> Option<Source> {
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .copied()
    }

    /// Publish where each name is defined after a change.
    fn publish(&self, state: &SetState) {
        *self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state.sources();
    }

    async fn sourced(&self, name: &str, source: Source) -> Result<SourcedStatus, SetError> {
        let status = self
            .delivery
            .status(name)
            .ok_or_else(|| SetError::Unknown(name.to_string()))?;
        Ok(SourcedStatus { source, status })
    }

    /// `POST /v1/destinations`: validate, store, start. A name in use is a conflict.
    pub async fn create(&self, body: serde_json::Value) -> Result<SourcedStatus, SetError> {
        let entry = ApiDestination::from_body(body, None).map_err(SetError::Invalid)?;
        let mut state = self.state.lock().await;
        if let Some(source_kind) = state.source_of(&entry.name) {
            return Err(SetError::Conflict {
                name: entry.name,
                source_kind,
            });
        }
        let configured = self.configure_api(&entry).await?;
        let mut api = state.api.clone();
        api.push(entry.clone());
        let before = state.api.clone();
        self.commit(&mut state, api).await?;
        // Opening a new cursor is a small blocking write + fsync; admin requests are rare.
        if let Err(err) = self.delivery.add(configured) {
            self.commit(&mut state, before).await?;
            return Err(err.into());
        }
        count_changes("create", 1);
        tracing::info!(destination = %entry.name, "destination created through the admin API");
        drop(state);
        self.sourced(&entry.name, Source::Api).await
    }

    /// `PUT /v1/destinations/{name}`: replace its options; the cursor stays. An unchanged
    /// body changes nothing (no restart).
    pub async fn update(
        &self,
        name: &str,
        body: serde_json::Value,
    ) -> Result<SourcedStatus, SetError> {
        let mut state = self.state.lock().await;
        let index = self.api_index(&state, name)?;
        let entry = ApiDestination::from_body(body, Some(name)).map_err(SetError::Invalid)?;
        if state.api[index] != entry {
            let configured = self.configure_api(&entry).await?;
            let mut api = state.api.clone();
            api[index] = entry;
            self.commit(&mut state, api).await?;
            self.delivery.replace(configured).await?;
            count_changes("update", 1);
            tracing::info!(
                destination = name,
                "destination changed through the admin API"
            );
        }
        drop(state);
        self.sourced(name, Source::Api).await
    }

    /// `DELETE /v1/destinations/{name}`: stop it and release its cursor.
    pub async fn delete(&self, name: &str) -> Result<(), SetError> {
        let mut state = self.state.lock().await;
        let index = self.api_index(&state, name)?;
        let mut api = state.api.clone();
        api.remove(index);
        self.commit(&mut state, api).await?;
        self.delivery.remove(name).await?;
        count_changes("delete", 1);
        tracing::info!(
            destination = name,
            "destination deleted through the admin API"
        );
        Ok(())
    }

    fn api_index(&self, state: &SetState, name: &str) -> Result<usize, SetError> {
        match state.source_of(name) {
            None => Err(SetError::Unknown(name.to_string())),
            Some(Source::Config) => Err(SetError::ManagedByConfig(name.to_string())),
            Some(Source::Api) => state
                .api
                .iter()
                .position(|entry| entry.name == name)
                .ok_or_else(|| SetError::Unknown(name.to_string())),
        }
    }

    /// Apply re-read config destinations: validate all of them first (an error changes
    /// nothing), then add new names, restart changed ones (cursor kept) and remove dropped
    /// ones (cursor released).
    pub async fn reload(&self, specs: Vec<DestinationSpec>) -> Result<ReloadSummary, SetError> {
        let mut state = self.state.lock().await;
        let (config, configured) = configure_config(specs, &self.defaults, &self.data_dir).await?;
        (self.check)(&configured).map_err(SetError::Invalid)?;
        if let Some(entry) = state
            .api
            .iter()
            .find(|entry| config.contains_key(&entry.name))
        {
            return Err(SetError::Invalid(format!(
                "destination `{}` is already defined by the admin API ({}): rename it in the \
                 config file or DELETE it through the API first",
                entry.name,
                self.store.path().display()
            )));
        }
        let mut summary = ReloadSummary::default();
        let applied = self
            .apply_config(&mut state, config, configured, &mut summary)
            .await;
        self.publish(&state);
        count_changes("create", summary.added.len());
        count_changes("update", summary.changed.len());
        count_changes("delete", summary.removed.len());
        applied.map(|()| summary)
    }

    /// Apply a validated config set step by step. `state.config` follows every step that
    /// succeeded, so after an I/O failure half-way it still matches what runs (and the next
    /// reload picks up from there).
    async fn apply_config(
        &self,
        state: &mut SetState,
        mut config: BTreeMap<String, DestinationSpec>,
        configured: Vec<ConfiguredDestination>,
        summary: &mut ReloadSummary,
    ) -> Result<(), SetError> {
        let dropped: Vec<String> = state
            .config
            .keys()
            .filter(|name| !config.contains_key(*name))
            .cloned()
            .collect();
        for name in dropped {
            self.delivery.remove(&name).await?;
            state.config.remove(&name);
            summary.removed.push(name);
        }
        for built in configured {
            let name = built.settings.name.clone();
            let Some(spec) = config.remove(&name) else {
                continue;
            };
            match state.config.get(&name) {
                None => {
                    self.delivery.add(built)?;
                    summary.added.push(name.clone());
                }
                Some(old) if *old != spec => {
                    self.delivery.replace(built).await?;
                    summary.changed.push(name.clone());
                }
                Some(_) => summary.unchanged += 1,
            }
            state.config.insert(name, spec);
        }
        Ok(())
    }

    /// Store `api` durably, then make it the state (and publish the sources). On a store
    /// error the state stays as it was.
    async fn commit(&self, state: &mut SetState, api: Vec<ApiDestination>) -> Result<(), SetError> {
        self.save(&api).await?;
        state.api = api;
        self.publish(state);
        Ok(())
    }

    async fn save(&self, api: &[ApiDestination]) -> Result<(), SetError> {
        let (store, api) = (self.store.clone(), api.to_vec());
        tokio::task::spawn_blocking(move || store.save(&api))
            .await
            .map_err(|err| {
                SetError::Store(StoreError::Io {
                    path: self.store.path().to_path_buf(),
                    source: std::io::Error::other(err.to_string()),
                })
            })?
            .map_err(SetError::Store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::EngineOptions;

    fn spec(text: &str) -> DestinationSpec {
        DestinationSpec::parse(text).unwrap()
    }

    async fn running(dir: &Path, config: &[&str]) -> DestinationSet {
        let mut options = crate::wal::WalOptions::new(dir.join("wal"));
        (options.segment_bytes, options.min_free_bytes) = (1 << 20, 0);
        let wal = crate::wal::Wal::open(options).unwrap();
        let defaults = DeliveryDefaults::default();
        let specs = config.iter().map(|text| spec(text)).collect();
        let store = DestinationStore::new(dir);
        let mut startup = configure_startup(specs, &store, &defaults, dir)
            .await
            .unwrap();
        let configured = std::mem::take(&mut startup.configured);
        let delivery = Delivery::start(&wal, configured, &EngineOptions::new(dir)).unwrap();
        DestinationSet::new(delivery, startup, defaults, dir)
    }

    #[tokio::test]
    async fn the_sources_stay_apart_and_a_refused_reload_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let set = running(dir.path(), &["log:?name=a"]).await;
        let b = serde_json::json!({"name": "b", "url": "log:"});
        set.create(b.clone()).await.unwrap();
        assert!(matches!(
            set.create(b).await,
            Err(SetError::Conflict { .. })
        ));
        let a = serde_json::json!({"url": "log:stderr"});
        assert!(matches!(
            set.update("a", a).await,
            Err(SetError::ManagedByConfig(_))
        ));

        let clash = set.reload(vec![spec("log:?name=b")]).await.unwrap_err();
        assert!(clash.to_string().contains("admin API"), "{clash}");
        let typo = set.reload(vec![spec("log:?name=c&lingr=1s")]).await;
        assert!(matches!(typo, Err(SetError::Invalid(_))));
        assert_eq!(set.delivery().names(), vec!["a", "b"], "nothing changed");

        let summary = set.reload(vec![spec("log:?name=c")]).await.unwrap();
        assert_eq!(
            (summary.added, summary.removed),
            (vec!["c".to_string()], vec!["a".to_string()])
        );
        assert_eq!(set.delivery().names(), vec!["b", "c"]);
        assert_eq!(set.source_of("c"), Some(Source::Config));
        assert_eq!(set.source_of("a"), None);

        set.delete("b").await.unwrap();
        assert_eq!(set.delivery().names(), vec!["c"]);
        assert!(DestinationStore::new(dir.path()).load().unwrap().is_empty());
        set.delivery().shutdown().await;
    }
}

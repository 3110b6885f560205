//! Azure Event Hubs (`eventhubs://NAMESPACE/HUB?policy=NAME&key=env:EH_KEY`, or
//! `connection_string=env:…`): configuration and shared access signatures.
//!
//! Only the parts every transport needs exist so far: `config` (namespace, hub, shared access
//! policy and key, or a connection string) and `sas` (SAS tokens, Microsoft's documented
//! algorithm). The sending side (AMQP through `azure_messaging_eventhubs`, or the REST "send
//! batch events" API) is not built yet, so the type is not in the destination registry.
//! Meanwhile Event Hubs is reachable through its Kafka endpoint with the `kafka` destination
//! (see docs/destinations.md).

pub mod config;
pub mod sas;

pub use config::{EventHubsCredentials, EventHubsOptions, EventHubsTarget};
pub use sas::sas_token;

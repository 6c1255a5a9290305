//! AlterConfigs (33): replaces a topic's whole set of config overrides (configs left out return
//! to the broker default). The new set is validated and persisted by the controller (shard 0)
//! and applied to every live log of the topic. Broker configs are read-only on this broker.
//!
//! The per-resource checks shared with IncrementalAlterConfigs live here too.

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::str_bytes;
use crate::metadata::validate_topic_name;
use crate::shard::{ConfigEdit, Shard};
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

const INVALID_TOPIC: i16 = 17;
pub(crate) const INVALID_CONFIG: i16 = 40;
pub(crate) const INVALID_REQUEST: i16 = 42;

/// Handles the request.
pub async fn handle(shard: &Rc<Shard>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let resources: Vec<(i8, &str)> = request
        .resources
        .iter()
        .map(|resource| (resource.resource_type, resource.resource_name.as_str()))
        .collect();
    let checked: Vec<Result<ConfigEdit, (i16, String)>> = request
        .resources
        .iter()
        .zip(duplicates(&resources))
        .map(|(resource, duplicate)| {
            check_resource(
                resource.resource_type,
                resource.resource_name.as_str(),
                duplicate,
            )?;
            let mut configs = BTreeMap::new();
            for config in &resource.configs {
                let name = config.name.to_string();
                let Some(value) = &config.value else {
                    return Err((
                        INVALID_REQUEST,
                        format!("Null value not supported for topic config {name}"),
                    ));
                };
                if configs.insert(name, value.to_string()).is_some() {
                    return Err((
                        INVALID_REQUEST,
                        "Error due to duplicate config keys".to_string(),
                    ));
                }
            }
            // Values are validated by the controller, against the configs it will store.
            let edit: ConfigEdit = Box::new(move |_current| Ok(configs));
            Ok(edit)
        })
        .collect();
    let outcomes = apply(shard, &resources, checked, request.validate_only).await;
    let responses = request
        .resources
        .iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let response = AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match outcome {
                Ok(()) => response.with_error_message(None),
                Err((code, message)) => response
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// For each resource, whether an earlier one in the request names the same resource.
pub(crate) fn duplicates(resources: &[(i8, &str)]) -> Vec<bool> {
    let mut seen = HashSet::new();
    resources
        .iter()
        .map(|resource| !seen.insert(*resource))
        .collect()
}

/// The checks every alterable resource passes before its configs are looked at.
pub(crate) fn check_resource(
    resource_type: i8,
    name: &str,
    duplicate: bool,
) -> Result<(), (i16, String)> {
    if duplicate {
        return Err((INVALID_REQUEST, "Duplicate resource in request.".into()));
    }
    match resource_type {
        RESOURCE_TOPIC => validate_topic_name(name).map_err(|message| (INVALID_TOPIC, message)),
        RESOURCE_BROKER => Err((
            INVALID_REQUEST,
            "Broker configs are read-only on this broker; set them at startup.".into(),
        )),
        other => Err((
            INVALID_REQUEST,
            format!("Unsupported resource type: {other}"),
        )),
    }
}

/// Sends the edits that passed the checks to the controller; returns one outcome per resource.
pub(crate) async fn apply(
    shard: &Shard,
    resources: &[(i8, &str)],
    checked: Vec<Result<ConfigEdit, (i16, String)>>,
    validate_only: bool,
) -> Vec<Result<(), (i16, String)>> {
    let mut outcomes: Vec<Result<(), (i16, String)>> = Vec::with_capacity(checked.len());
    let mut edits = Vec::new();
    for ((_, name), check) in resources.iter().zip(checked) {
        match check {
            Ok(edit) => {
                edits.push((name.to_string(), edit));
                outcomes.push(Ok(()));
            }
            Err(error) => outcomes.push(Err(error)),
        }
    }
    if edits.is_empty() {
        return outcomes;
    }
    let mut results = shard
        .alter_topic_configs(edits, validate_only)
        .await
        .into_iter();
    for outcome in outcomes.iter_mut().filter(|outcome| outcome.is_ok()) {
        *outcome = results
            .next()
            .unwrap_or_else(|| Err((-1, "the controller gave no answer".into())));
    }
    outcomes
}

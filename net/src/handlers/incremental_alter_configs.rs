//! IncrementalAlterConfigs (44): SET, DELETE, APPEND and SUBTRACT on single topic configs; the
//! rest of the topic's overrides stay as they are. The operations run on the controller against
//! the topic's current overrides, so concurrent changes to one topic do not lose each other.
//! APPEND and SUBTRACT apply to list configs (`cleanup.policy`) only, starting from the broker
//! default when the topic has no override.

use super::alter_configs::{self, INVALID_CONFIG, INVALID_REQUEST};
use super::describe_configs::is_list_config;
use super::str_bytes;
use crate::configs;
use crate::shard::{ConfigEdit, Shard};
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use runnel_engine::LogConfig;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

/// `AlterConfigOp.OpType` ids.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One checked operation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Operation {
    Set(String),
    Delete,
    /// The items to add, or remove.
    Append(Vec<String>),
    Subtract(Vec<String>),
}

/// Handles the request.
pub async fn handle(
    shard: &Rc<Shard>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources: Vec<(i8, &str)> = request
        .resources
        .iter()
        .map(|resource| (resource.resource_type, resource.resource_name.as_str()))
        .collect();
    let defaults = &shard.config.log_defaults;
    let checked = request
        .resources
        .iter()
        .zip(alter_configs::duplicates(&resources))
        .map(|(resource, duplicate)| {
            alter_configs::check_resource(
                resource.resource_type,
                resource.resource_name.as_str(),
                duplicate,
            )?;
            let operations = check_operations(resource, defaults)?;
            let edit: ConfigEdit =
                Box::new(move |current| Ok(apply_operations(current, operations)));
            Ok(edit)
        })
        .collect();
    let outcomes = alter_configs::apply(shard, &resources, checked, request.validate_only).await;
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The operations of one resource with their names and kinds checked, and the broker default
/// each list operation starts from when the topic has no override.
type Operations = Vec<(String, Operation, Option<String>)>;

fn check_operations(
    resource: &AlterConfigsResource,
    defaults: &LogConfig,
) -> Result<Operations, (i16, String)> {
    let mut seen = HashSet::new();
    let mut operations = Vec::with_capacity(resource.configs.len());
    for config in &resource.configs {
        let name = config.name.to_string();
        if !seen.insert(name.clone()) {
            return Err((INVALID_REQUEST, "Error due to duplicate config keys".into()));
        }
        if !configs::TOPIC_CONFIGS.contains(&name.as_str()) {
            return Err((INVALID_CONFIG, format!("Unknown topic config name: {name}")));
        }
        let value = config.value.as_ref().map(|value| value.to_string());
        let needs_value = |value: Option<String>| {
            value.ok_or_else(|| {
                (
                    INVALID_REQUEST,
                    format!("Null value not supported for : {name}"),
                )
            })
        };
        let operation = match config.config_operation {
            OP_SET => Operation::Set(needs_value(value)?),
            OP_DELETE => Operation::Delete,
            OP_APPEND | OP_SUBTRACT => {
                if !is_list_config(&name) {
                    let verb = if config.config_operation == OP_APPEND {
                        "APPEND"
                    } else {
                        "SUBTRACT"
                    };
                    return Err((
                        INVALID_CONFIG,
                        format!("Can't {verb} to key {name} because its type is not LIST."),
                    ));
                }
                let items = list_items(&needs_value(value)?);
                if config.config_operation == OP_APPEND {
                    Operation::Append(items)
                } else {
                    Operation::Subtract(items)
                }
            }
            other => {
                return Err((
                    INVALID_REQUEST,
                    format!("Unknown config operation {other} for {name}"),
                ))
            }
        };
        let default = configs::default_value(defaults, &name);
        operations.push((name, operation, default));
    }
    Ok(operations)
}

/// The overrides after the operations (values are validated by the controller afterwards).
fn apply_operations(
    current: &BTreeMap<String, String>,
    operations: Operations,
) -> BTreeMap<String, String> {
    let mut configs = current.clone();
    for (name, operation, default) in operations {
        let base = || {
            let value = configs.get(&name).cloned().or(default.clone());
            list_items(&value.unwrap_or_default())
        };
        let list = match operation {
            Operation::Set(value) => {
                configs.insert(name, value);
                continue;
            }
            Operation::Delete => {
                configs.remove(&name);
                continue;
            }
            Operation::Append(items) => {
                let mut list = base();
                for item in items {
                    if !list.contains(&item) {
                        list.push(item);
                    }
                }
                list
            }
            Operation::Subtract(items) => {
                let mut list = base();
                list.retain(|item| !items.contains(item));
                list
            }
        };
        configs.insert(name, list.join(","));
    }
    configs
}

/// A list config's items: comma-separated, trimmed, empty items dropped.
fn list_items(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        name: &str,
        operation: Operation,
        default: Option<&str>,
    ) -> (String, Operation, Option<String>) {
        (name.into(), operation, default.map(str::to_string))
    }

    #[test]
    fn append_and_subtract_start_from_the_default_and_keep_order() {
        let none = BTreeMap::new();
        let appended = apply_operations(
            &none,
            vec![op(
                "cleanup.policy",
                Operation::Append(vec!["compact".into(), "delete".into()]),
                Some("delete"),
            )],
        );
        assert_eq!(appended["cleanup.policy"], "delete,compact");
        let subtracted = apply_operations(
            &appended,
            vec![op(
                "cleanup.policy",
                Operation::Subtract(vec!["delete".into()]),
                Some("delete"),
            )],
        );
        assert_eq!(subtracted["cleanup.policy"], "compact");
    }

    #[test]
    fn set_and_delete_touch_only_their_key() {
        let mut current = BTreeMap::new();
        current.insert("retention.ms".to_string(), "1000".to_string());
        current.insert("segment.bytes".to_string(), "4096".to_string());
        let after = apply_operations(
            &current,
            vec![
                op("retention.ms", Operation::Delete, None),
                op("max.message.bytes", Operation::Set("2000".into()), None),
            ],
        );
        assert_eq!(after.get("retention.ms"), None);
        assert_eq!(after["segment.bytes"], "4096");
        assert_eq!(after["max.message.bytes"], "2000");
    }
}

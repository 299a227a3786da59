//! SCRAM user administration over the Kafka protocol: DescribeUserScramCredentials and
//! AlterUserScramCredentials (`kafka-configs.sh --entity-type users`, the admin clients'
//! `describe_user_scram_credentials` / `alter_user_scram_credentials`), on
//! [`crate::services::users`]. Kafka numbers the mechanisms (1 SCRAM-SHA-256, 2
//! SCRAM-SHA-512); the client salts and hashes the password, so no password reaches the
//! broker, as with sluice's own CLI.

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse, ResponseKind,
};
use sluice_protocol::scram::Mechanism;
use sluice_protocol::ErrorCode;

use super::{kafka_error, kafka_str};
use crate::error::ApiError;
use crate::security::Principal;
use crate::services::users::{UserChange, Users};

/// Kafka's number of a SCRAM mechanism.
fn mechanism_code(mechanism: Mechanism) -> i8 {
    match mechanism {
        Mechanism::Sha256 => 1,
        Mechanism::Sha512 => 2,
    }
}

/// The SCRAM mechanism of Kafka's number.
fn mechanism_of(code: i8) -> Result<Mechanism, ApiError> {
    match code {
        1 => Ok(Mechanism::Sha256),
        2 => Ok(Mechanism::Sha512),
        other => Err(ApiError::new(
            ErrorCode::UnsupportedSaslMechanism,
            format!("mechanism {other} is not a SCRAM mechanism: use SCRAM-SHA-256 (1) or SCRAM-SHA-512 (2)"),
        )),
    }
}

/// DescribeUserScramCredentials: each user named (every user when none is) with its
/// mechanisms and iterations; a user without a credential is RESOURCE_NOT_FOUND.
pub fn describe(
    service: &Users,
    principal: &Principal,
    request: DescribeUserScramCredentialsRequest,
) -> ResponseKind {
    let names = request
        .users
        .map(|users| users.into_iter().map(|u| u.name.to_string()).collect());
    let response = match service.describe(principal, names) {
        Ok(users) => {
            let results = users
                .into_iter()
                .map(|(user, outcome)| {
                    let result =
                        DescribeUserScramCredentialsResult::default().with_user(kafka_str(user));
                    match outcome {
                        Ok(info) => result.with_credential_infos(
                            info.credentials
                                .into_iter()
                                .map(|(mechanism, iterations)| {
                                    CredentialInfo::default()
                                        .with_mechanism(mechanism_code(mechanism))
                                        .with_iterations(iterations as i32)
                                })
                                .collect(),
                        ),
                        Err(e) => {
                            let (code, message) =
                                kafka_error(ApiKey::DescribeUserScramCredentials, &e);
                            result.with_error_code(code).with_error_message(message)
                        }
                    }
                })
                .collect();
            DescribeUserScramCredentialsResponse::default().with_results(results)
        }
        Err(e) => {
            let (code, message) = kafka_error(ApiKey::DescribeUserScramCredentials, &e);
            DescribeUserScramCredentialsResponse::default()
                .with_error_code(code)
                .with_error_message(message)
        }
    };
    ResponseKind::DescribeUserScramCredentials(response)
}

/// AlterUserScramCredentials: the deletions, then the upsertions, through the controller;
/// one result per user, the first error of its changes if any failed.
pub async fn alter(
    service: &Users,
    principal: &Principal,
    request: AlterUserScramCredentialsRequest,
) -> ResponseKind {
    let mut users: Vec<String> = Vec::new();
    let mut outcomes: Vec<(String, Result<(), ApiError>)> = Vec::new();
    let mut changes = Vec::new();
    let deletions = request.deletions.into_iter().map(|d| {
        let user = d.name.to_string();
        let change = mechanism_of(d.mechanism).map(|mechanism| UserChange::Delete {
            user: user.clone(),
            mechanism,
        });
        (user, change)
    });
    let upsertions = request.upsertions.into_iter().map(|u| {
        let user = u.name.to_string();
        let change = mechanism_of(u.mechanism).map(|mechanism| UserChange::Upsert {
            user: user.clone(),
            mechanism,
            iterations: u.iterations,
            salt: u.salt.to_vec(),
            salted_password: u.salted_password.to_vec(),
        });
        (user, change)
    });
    for (user, change) in deletions.chain(upsertions) {
        if !users.contains(&user) {
            users.push(user.clone());
        }
        match change {
            Ok(change) => changes.push(change),
            Err(e) => outcomes.push((user, Err(e))),
        }
    }
    if !changes.is_empty() {
        outcomes.extend(service.alter(principal, changes).await);
    }
    let results = users
        .into_iter()
        .map(|user| {
            let failed = outcomes
                .iter()
                .find_map(|(u, outcome)| (*u == user).then_some(outcome.as_ref().err()).flatten());
            let result =
                AlterUserScramCredentialsResult::default().with_user(kafka_str(user.clone()));
            match failed {
                None => result,
                Some(e) => {
                    let (code, message) = kafka_error(ApiKey::AlterUserScramCredentials, e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    ResponseKind::AlterUserScramCredentials(
        AlterUserScramCredentialsResponse::default().with_results(results),
    )
}

//! AlterUserScramCredentials and DescribeUserScramCredentials: the native requests in,
//! [`crate::services::users`] changes or lists users, the native responses out.

use sluice_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    AlterUserScramCredentialsResult, CredentialInfo, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse, DescribedUser,
};
use sluice_protocol::scram::Mechanism;
use sluice_protocol::ErrorCode;

use crate::error::ApiError;
use crate::security::Principal;
use crate::services::users::{UserChange, Users};

/// Creates, replaces or removes SCRAM credentials.
pub async fn alter(
    service: &Users,
    principal: &Principal,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // A change naming a mechanism sluice does not have is answered here, in order.
    let mut refused = Vec::new();
    let mut changes = Vec::new();
    let mechanism = |name: &str| {
        Mechanism::from_name(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnsupportedSaslMechanism,
                format!("{name:?} is not a SCRAM mechanism: use SCRAM-SHA-256 or SCRAM-SHA-512"),
            )
        })
    };
    for d in request.deletions {
        match mechanism(&d.mechanism) {
            Ok(mechanism) => changes.push(UserChange::Delete {
                user: d.name,
                mechanism,
            }),
            Err(e) => refused.push((d.name, Err(e))),
        }
    }
    for u in request.upsertions {
        match mechanism(&u.mechanism) {
            Ok(mechanism) => changes.push(UserChange::Upsert {
                user: u.name,
                mechanism,
                iterations: u.iterations,
                salt: u.salt.to_vec(),
                salted_password: u.salted_password.to_vec(),
            }),
            Err(e) => refused.push((u.name, Err(e))),
        }
    }
    let mut results = refused;
    if !changes.is_empty() {
        results.extend(service.alter(principal, changes).await);
    }
    AlterUserScramCredentialsResponse {
        results: results
            .into_iter()
            .map(|(user, outcome)| AlterUserScramCredentialsResult {
                user,
                error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
                error_message: outcome.err().and_then(|e| e.wire_message()),
            })
            .collect(),
    }
}

/// Lists users and their mechanisms (never their keys).
pub fn describe(
    service: &Users,
    principal: &Principal,
    request: DescribeUserScramCredentialsRequest,
) -> Result<DescribeUserScramCredentialsResponse, ApiError> {
    Ok(DescribeUserScramCredentialsResponse {
        users: service
            .describe(principal, request.users)?
            .into_iter()
            .map(|(user, outcome)| match outcome {
                Ok(info) => DescribedUser {
                    user,
                    error_code: ErrorCode::None,
                    error_message: None,
                    credentials: info
                        .credentials
                        .into_iter()
                        .map(|(m, iterations)| CredentialInfo {
                            mechanism: m.name().to_owned(),
                            iterations: iterations as i32,
                        })
                        .collect(),
                },
                Err(e) => DescribedUser {
                    user,
                    error_code: e.code,
                    error_message: e.wire_message(),
                    credentials: Vec::new(),
                },
            })
            .collect(),
    })
}

//! SCRAM users (issue 22): created, replaced and removed through the active controller's
//! metadata log, listed from this broker's image. Clients send a salted password (the
//! client runs PBKDF2), the controller keeps only what checks a login
//! (`scram::ScramCredential`), and every broker answers logins from its own image.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::messages::{
    AlterUserScramCredentialsRequest, ScramCredentialDeletion, ScramCredentialUpsertion,
};
use sluice_protocol::scram::{Mechanism, ScramCredential};
use sluice_protocol::{ErrorCode, Request, Response};

use crate::cluster::image::MetadataImage;
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::security::acl::{Authorizer, Operation, Resource};
use crate::security::Principal;

/// How long a change waits for the controller.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a change waits to show in this broker's image.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A change to one user's credential of one mechanism.
#[derive(Clone, Debug)]
pub enum UserChange {
    /// Create or replace it from a salted password.
    Upsert {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: Mechanism,
        /// PBKDF2 iterations.
        iterations: i32,
        /// The salt.
        salt: Vec<u8>,
        /// `Hi(password, salt, iterations)`.
        salted_password: Vec<u8>,
    },
    /// Remove it.
    Delete {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: Mechanism,
    },
}

impl UserChange {
    fn user(&self) -> &str {
        match self {
            UserChange::Upsert { user, .. } | UserChange::Delete { user, .. } => user,
        }
    }

    /// Whether `image` shows the change.
    fn shows_in(&self, image: &MetadataImage) -> bool {
        match self {
            UserChange::Upsert {
                user,
                mechanism,
                iterations,
                salt,
                salted_password,
            } => {
                let expected = ScramCredential::from_salted_password(
                    *mechanism,
                    salt.clone(),
                    u32::try_from(*iterations).unwrap_or(0),
                    salted_password,
                );
                image.users.get(user).and_then(|c| c.get(mechanism)) == Some(&expected)
            }
            UserChange::Delete { user, mechanism } => image
                .users
                .get(user)
                .is_none_or(|c| !c.contains_key(mechanism)),
        }
    }
}

/// A user and the mechanisms it has a credential for, with their iterations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user.
    pub name: String,
    /// `(mechanism, iterations)`, by mechanism.
    pub credentials: Vec<(Mechanism, u32)>,
}

/// Each user of a request with its outcome.
pub type PerUser<T> = Vec<(String, Result<T, ApiError>)>;

/// The users service.
#[derive(Clone)]
pub struct Users {
    cluster: Arc<Cluster>,
    authorizer: Arc<Authorizer>,
}

impl Users {
    /// Users of `cluster`'s metadata; changing them needs Alter on the cluster, listing
    /// them Describe.
    pub fn new(cluster: Arc<Cluster>, authorizer: Arc<Authorizer>) -> Users {
        Users {
            cluster,
            authorizer,
        }
    }

    /// Applies `changes` through the controller, each with its outcome (deletions first,
    /// then upsertions, as the controller applies them); a successful change shows in this
    /// broker's image before the answer, so a login right after it works here.
    pub async fn alter(
        &self,
        principal: &Principal,
        changes: Vec<UserChange>,
    ) -> Vec<(String, Result<(), ApiError>)> {
        if let Err(e) = self
            .authorizer
            .check(principal, Operation::Alter, Resource::Cluster)
        {
            return changes
                .iter()
                .map(|c| (c.user().to_owned(), Err(e.clone())))
                .collect();
        }
        let (mut deletions, mut upsertions) = (Vec::new(), Vec::new());
        for change in &changes {
            match change {
                UserChange::Delete { user, mechanism } => deletions.push(ScramCredentialDeletion {
                    name: user.clone(),
                    mechanism: mechanism.name().to_owned(),
                }),
                UserChange::Upsert {
                    user,
                    mechanism,
                    iterations,
                    salt,
                    salted_password,
                } => upsertions.push(ScramCredentialUpsertion {
                    name: user.clone(),
                    mechanism: mechanism.name().to_owned(),
                    iterations: *iterations,
                    salt: salt.clone().into(),
                    salted_password: salted_password.clone().into(),
                }),
            }
        }
        let ordered: Vec<UserChange> = changes
            .iter()
            .filter(|c| matches!(c, UserChange::Delete { .. }))
            .chain(
                changes
                    .iter()
                    .filter(|c| matches!(c, UserChange::Upsert { .. })),
            )
            .cloned()
            .collect();
        let request = Request::AlterUserScramCredentials(AlterUserScramCredentialsRequest {
            deletions,
            upsertions,
        });
        let results = match self.cluster.client.call(request, CONTROLLER_TIMEOUT).await {
            Ok(Response::AlterUserScramCredentials(r)) if r.results.len() == ordered.len() => r
                .results
                .into_iter()
                .map(|r| {
                    let outcome = match r.error_code {
                        ErrorCode::None => Ok(()),
                        code => Err(ApiError::new(code, r.error_message.unwrap_or_default())),
                    };
                    (r.user, outcome)
                })
                .collect::<Vec<_>>(),
            Ok(other) => {
                let e = super::controller_answered(other.api_key());
                return ordered
                    .iter()
                    .map(|c| (c.user().to_owned(), Err(e.clone())))
                    .collect();
            }
            Err(e) => {
                return ordered
                    .iter()
                    .map(|c| (c.user().to_owned(), Err(e.clone())))
                    .collect()
            }
        };
        let done: Vec<&UserChange> = ordered
            .iter()
            .zip(&results)
            .filter(|(_, (_, r))| r.is_ok())
            .map(|(c, _)| c)
            .collect();
        self.cluster
            .wait_for_image(APPLY_TIMEOUT, |image| {
                done.iter().all(|c| c.shows_in(image))
            })
            .await;
        results
    }

    /// The users named (every user when `None`), sorted by name; a named user without a
    /// credential is RESOURCE_NOT_FOUND.
    pub fn describe(
        &self,
        principal: &Principal,
        names: Option<Vec<String>>,
    ) -> Result<PerUser<UserInfo>, ApiError> {
        self.authorizer
            .check(principal, Operation::Describe, Resource::Cluster)?;
        let image = self.cluster.image();
        let names = names.unwrap_or_else(|| image.users.keys().cloned().collect());
        Ok(names
            .into_iter()
            .map(|name| {
                let outcome = match image.users.get(&name) {
                    Some(credentials) => Ok(UserInfo {
                        name: name.clone(),
                        credentials: credentials
                            .iter()
                            .map(|(m, c)| (*m, c.iterations))
                            .collect(),
                    }),
                    None => Err(ApiError::new(
                        ErrorCode::ResourceNotFound,
                        format!("there is no user {name:?}"),
                    )),
                };
                (name, outcome)
            })
            .collect())
    }
}

//! Leader election by a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one runs the controllers at a time.
//!
//! The holder renews the Lease every quarter of its duration; every write names the
//! `resourceVersion` it read, so the API server refuses it (409) if anyone wrote in between,
//! and two candidates can never both win. A candidate judges a Lease expired by its own
//! monotonic clock, from when it first saw the current version, never by comparing the
//! holder's `renewTime` with its wall clock: that way clock skew between nodes cannot make two
//! holders. A holder that cannot renew for two thirds of the duration steps down (stops the
//! controllers and returns [`LeaseError::Lost`]) before anyone else may take over; on a
//! graceful shutdown it releases the Lease, so a successor starts at once.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::chrono::Utc;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Which Lease, who we are, and how long a holder's claim lasts.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per process (a restarted pod is a new candidate).
    pub identity: String,
    /// How long a claim lasts without renewal; whole seconds, at least one.
    pub duration: Duration,
}

impl LeaseConfig {
    fn duration_secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
    fn renew_every(&self) -> Duration {
        self.duration / 4
    }
    /// Retry of a failed renewal, and the poll of a candidate.
    fn retry_every(&self) -> Duration {
        (self.duration / 8).max(Duration::from_millis(200))
    }
    /// Past this without a renewal the holder steps down; the third left lets it stop the
    /// controllers before the claim runs out for the others.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
    /// The longest any one API call may take.
    fn call_timeout(&self) -> Duration {
        (self.duration / 4).max(Duration::from_millis(500))
    }
    fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{action} Lease {lease}: {source}")]
    Kube {
        action: &'static str,
        lease: String,
        #[source]
        source: kube::Error,
    },
    #[error("{action} Lease {lease}: no answer within {timeout:?}")]
    Timeout {
        action: &'static str,
        lease: String,
        timeout: Duration,
    },
    #[error("lost the Lease {lease}: {reason}")]
    Lost { lease: String, reason: String },
}

/// What a candidate does about the Lease as it reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Free, or its holder let it expire: claim it.
    Take,
    /// Ours: renew it.
    Renew,
    /// Another holder's, still valid.
    Wait,
}

/// `unchanged_for`: how long this candidate has seen the Lease at the same version.
pub fn decide(spec: &LeaseSpec, me: &str, unchanged_for: Duration, ours: Duration) -> Decision {
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    // The holder's own duration counts: it renews by it.
    let lasts = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(ours, Duration::from_secs);
    match holder {
        None => Decision::Take,
        Some(holder) if holder == me => Decision::Renew,
        Some(_) if unchanged_for >= lasts => Decision::Take,
        Some(_) => Decision::Wait,
    }
}

/// The spec that claims (or renews) `current` for `me`.
fn claim(current: Option<&LeaseSpec>, me: &str, duration_secs: i32) -> LeaseSpec {
    let now = MicroTime(Utc::now());
    let mut spec = current.cloned().unwrap_or_default();
    let previous = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    if previous != Some(me) {
        if previous.is_some() {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.acquire_time = Some(now.clone());
        spec.holder_identity = Some(me.to_string());
    }
    spec.lease_transitions.get_or_insert(0);
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = Some(now);
    spec
}

/// The outcome of one attempt to hold the Lease.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Held,
    HeldBy(String),
    /// Someone wrote between our read and our write; read again.
    Conflict,
}

/// When this candidate first saw the Lease's current version.
struct Observed {
    resource_version: Option<String>,
    since: Instant,
}

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
}

fn is_conflict(e: &LeaseError) -> bool {
    matches!(e, LeaseError::Kube { source: kube::Error::Api(r), .. } if r.code == 409)
}

impl Elector {
    async fn call<T>(
        &self,
        action: &'static str,
        timeout: Duration,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseError> {
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map_err(|source| LeaseError::Kube {
                action,
                lease: self.config.lease(),
                source,
            }),
            Err(_) => Err(LeaseError::Timeout {
                action,
                lease: self.config.lease(),
                timeout,
            }),
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let version = &lease.metadata.resource_version;
        if self.observed.as_ref().map(|o| &o.resource_version) != Some(version) {
            self.observed = Some(Observed {
                resource_version: version.clone(),
                since: Instant::now(),
            });
        }
    }

    /// One read and at most one write, each within `timeout`.
    async fn try_hold(&mut self, timeout: Duration) -> Result<Attempt, LeaseError> {
        let me = self.config.identity.clone();
        let found = self
            .call("get", timeout, self.api.get_opt(&self.config.name))
            .await?;
        let Some(mut lease) = found else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(claim(None, &me, self.config.duration_secs())),
            };
            let created = self
                .call(
                    "create",
                    timeout,
                    self.api.create(&PostParams::default(), &lease),
                )
                .await;
            return match created {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Held)
                }
                Err(e) if is_conflict(&e) => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        self.observe(&lease);
        let unchanged_for = self
            .observed
            .as_ref()
            .map_or(Duration::ZERO, |o| o.since.elapsed());
        let spec = lease.spec.clone().unwrap_or_default();
        match decide(&spec, &me, unchanged_for, self.config.duration) {
            Decision::Wait => Ok(Attempt::HeldBy(spec.holder_identity.unwrap_or_default())),
            Decision::Take | Decision::Renew => {
                // The read's resourceVersion stays in the metadata: the server's guard.
                lease.spec = Some(claim(Some(&spec), &me, self.config.duration_secs()));
                let written = self
                    .call(
                        "update",
                        timeout,
                        self.api
                            .replace(&self.config.name, &PostParams::default(), &lease),
                    )
                    .await;
                match written {
                    Ok(written) => {
                        self.observe(&written);
                        Ok(Attempt::Held)
                    }
                    Err(e) if is_conflict(&e) => Ok(Attempt::Conflict),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Hands the Lease over at once: no holder, so the next candidate takes it on its next poll.
    async fn release(&mut self) -> Result<(), LeaseError> {
        let timeout = self.config.call_timeout();
        let Some(mut lease) = self
            .call("get", timeout, self.api.get_opt(&self.config.name))
            .await?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.config.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Utc::now()));
        self.call(
            "release",
            timeout,
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease),
        )
        .await?;
        Ok(())
    }
}

/// Completes when the elected work must stop: shutdown was asked, or the Lease was lost.
pub struct StepDown(watch::Receiver<bool>);

impl StepDown {
    pub async fn wait(mut self) {
        // Err: the elector is gone, which is a reason to stop as good as any.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Waits for the Lease, then runs `elected` while holding it.
///
/// Returns `Ok` when `shutdown` completes (the Lease released after `elected` ends), and
/// [`LeaseError::Lost`] when it is lost or cannot be renewed in time: `elected` is told to
/// stop and given a quarter of the duration, after which the caller should exit.
pub async fn run_elected<F, Fut>(
    client: Client,
    config: LeaseConfig,
    shutdown: impl Future<Output = ()>,
    elected: F,
) -> Result<(), LeaseError>
where
    F: FnOnce(StepDown) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut elector = Elector {
        api: Api::namespaced(client, &config.namespace),
        config: config.clone(),
        observed: None,
    };
    tokio::pin!(shutdown);

    let mut holder_seen = None;
    let mut last_renewal = loop {
        let started = Instant::now();
        match elector.try_hold(config.call_timeout()).await {
            Ok(Attempt::Held) => break started,
            Ok(Attempt::HeldBy(holder)) => {
                if holder_seen.as_ref() != Some(&holder) {
                    tracing::info!(lease = %config.lease(), %holder, identity = %config.identity, "waiting for the lease");
                    holder_seen = Some(holder);
                }
            }
            Ok(Attempt::Conflict) => {}
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(config.retry_every()) => {}
        }
    };
    tracing::info!(lease = %config.lease(), identity = %config.identity, "leading");

    let (stop, stopped) = watch::channel(false);
    let work = elected(StepDown(stopped));
    tokio::pin!(work);
    let mut next_renewal = last_renewal + config.renew_every();
    let mut shutting_down = false;
    let lost = loop {
        tokio::select! {
            () = &mut work => break None,
            () = &mut shutdown, if !shutting_down => {
                // Keep renewing until the work has stopped: it still writes meanwhile.
                shutting_down = true;
                let _ = stop.send(true);
            }
            () = tokio::time::sleep_until(next_renewal) => {
                let started = Instant::now();
                let left = config.renew_deadline().saturating_sub(started - last_renewal);
                let timeout = config.call_timeout().min(left).max(Duration::from_millis(100));
                match elector.try_hold(timeout).await {
                    Ok(Attempt::Held) => {
                        last_renewal = started;
                        next_renewal = started + config.renew_every();
                        continue;
                    }
                    Ok(Attempt::HeldBy(holder)) => break Some(format!("now held by {holder}")),
                    Ok(Attempt::Conflict) => {}
                    Err(e) => tracing::warn!(error = %e, "renewing the lease"),
                }
                let since = last_renewal.elapsed();
                if since >= config.renew_deadline() {
                    break Some(format!("not renewed for {since:?}"));
                }
                next_renewal = Instant::now() + config.retry_every();
            }
        }
    };
    if let Some(reason) = lost {
        tracing::error!(lease = %config.lease(), %reason, "stepping down");
        let _ = stop.send(true);
        if tokio::time::timeout(config.duration / 4, work)
            .await
            .is_err()
        {
            tracing::warn!("the controllers did not stop in time");
        }
        return Err(LeaseError::Lost {
            lease: config.lease(),
            reason,
        });
    }
    match elector.release().await {
        Ok(()) => tracing::info!(lease = %config.lease(), "released the lease"),
        // The successor waits for the claim to run out instead.
        Err(e) => tracing::warn!(error = %e, "releasing the lease"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIFTEEN: Duration = Duration::from_secs(15);

    fn held_by(holder: Option<&str>, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: secs,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_free_lease_is_taken() {
        for spec in [held_by(None, Some(15)), held_by(Some(""), Some(15))] {
            assert_eq!(decide(&spec, "me", Duration::ZERO, FIFTEEN), Decision::Take);
        }
    }

    #[test]
    fn another_holders_lease_is_taken_only_once_unchanged_for_its_duration() {
        let spec = held_by(Some("other"), Some(10));
        let decide = |secs| decide(&spec, "me", Duration::from_secs(secs), FIFTEEN);
        assert_eq!(decide(0), Decision::Wait);
        assert_eq!(decide(9), Decision::Wait);
        // The holder's 10 s count, not our 15.
        assert_eq!(decide(10), Decision::Take);
        let no_duration = held_by(Some("other"), None);
        assert_eq!(
            super::decide(&no_duration, "me", Duration::from_secs(14), FIFTEEN),
            Decision::Wait
        );
        assert_eq!(
            super::decide(&no_duration, "me", FIFTEEN, FIFTEEN),
            Decision::Take
        );
    }

    #[test]
    fn my_own_lease_is_renewed_however_old() {
        let spec = held_by(Some("me"), Some(15));
        assert_eq!(
            decide(&spec, "me", Duration::ZERO, FIFTEEN),
            Decision::Renew
        );
        assert_eq!(
            decide(&spec, "me", Duration::from_secs(3600), FIFTEEN),
            Decision::Renew
        );
    }

    #[test]
    fn a_claim_counts_transitions_only_when_the_holder_changes() {
        let first = claim(None, "a", 15);
        assert_eq!(first.holder_identity.as_deref(), Some("a"));
        assert_eq!(first.lease_transitions, Some(0));
        assert_eq!(first.lease_duration_seconds, Some(15));
        assert!(first.acquire_time.is_some() && first.renew_time.is_some());
        let renewed = claim(Some(&first), "a", 15);
        assert_eq!(renewed.lease_transitions, Some(0));
        assert_eq!(renewed.acquire_time, first.acquire_time);
        let taken = claim(Some(&renewed), "b", 15);
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
        // A released Lease (no holder) is taken without counting a transition.
        let released = LeaseSpec {
            holder_identity: None,
            ..taken
        };
        assert_eq!(claim(Some(&released), "c", 15).lease_transitions, Some(1));
    }

    #[test]
    fn the_holder_steps_down_well_before_the_others_may_take_over() {
        let config = LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "me".into(),
            duration: FIFTEEN,
        };
        assert!(config.renew_every() < config.renew_deadline());
        assert!(config.renew_deadline() + config.duration / 4 <= config.duration);
        assert_eq!(config.duration_secs(), 15);
    }
}

/// The elector against a stand-in API server that keeps one Lease with real resourceVersion
/// checks, and can be told to fail or to hang; tokio's paused clock makes the timing exact.
#[cfg(test)]
mod api_tests {
    use std::sync::{Arc, Mutex};

    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    #[derive(Default)]
    struct Server {
        lease: Option<Value>,
        version: u64,
        hang: bool,
    }

    type Shared = Arc<Mutex<Server>>;

    /// `reason` as the API server spells it (kube's `get_opt` looks for `NotFound`).
    fn status(code: StatusCode, reason: &str) -> Response<Body> {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": reason, "message": "stand-in", "code": code.as_u16()});
        let mut response = Response::new(Body::from(body.to_string().into_bytes()));
        *response.status_mut() = code;
        response
    }

    fn ok(value: &Value) -> Response<Body> {
        Response::new(Body::from(value.to_string().into_bytes()))
    }

    async fn serve(server: Shared, request: Request<Body>) -> Response<Body> {
        let hang = server.lock().expect("server").hang;
        if hang {
            std::future::pending::<()>().await;
        }
        let method = request.method().clone();
        let body = request.into_body().collect_bytes().await.expect("body");
        let mut server = server.lock().expect("server");
        let written = || -> Value { serde_json::from_slice(&body).expect("a Lease") };
        match method.as_str() {
            "GET" => match &server.lease {
                Some(lease) => ok(lease),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            "POST" if server.lease.is_some() => status(StatusCode::CONFLICT, "AlreadyExists"),
            "POST" | "PUT" => {
                let mut lease = written();
                let current = server
                    .lease
                    .as_ref()
                    .map(|l| &l["metadata"]["resourceVersion"]);
                if method == "PUT" && current != Some(&lease["metadata"]["resourceVersion"]) {
                    return status(StatusCode::CONFLICT, "Conflict");
                }
                server.version += 1;
                lease["metadata"]["resourceVersion"] = json!(server.version.to_string());
                server.lease = Some(lease.clone());
                ok(&lease)
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }

    fn client(server: &Shared) -> Client {
        let server = server.clone();
        let service = tower::service_fn(move |request| {
            let server = server.clone();
            async move { Ok::<_, std::convert::Infallible>(serve(server, request).await) }
        });
        Client::new(service, "default")
    }

    fn config(identity: &str) -> LeaseConfig {
        LeaseConfig {
            name: "lease".into(),
            namespace: "ns".into(),
            identity: identity.into(),
            duration: Duration::from_secs(6),
        }
    }

    fn holder(server: &Shared) -> Option<String> {
        let server = server.lock().expect("server");
        server.lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_cannot_renew_steps_down_before_the_claim_runs_out() {
        let server = Shared::default();
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
        let elector = tokio::spawn(run_elected(
            client(&server),
            config("me"),
            std::future::pending(),
            |step_down| async move {
                step_down.wait().await;
                let _ = stopped_tx.send(Instant::now());
            },
        ));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(holder(&server).as_deref(), Some("me"));
        // The API server stops answering: every call hangs until its own timeout.
        server.lock().expect("server").hang = true;
        let hung_at = Instant::now();
        let result = elector.await.expect("the elector task");
        let stopped = stopped_rx.await.expect("the controllers were told to stop");
        assert!(
            matches!(&result, Err(LeaseError::Lost { reason, .. }) if reason.contains("not renewed")),
            "{result:?}"
        );
        // The last renewal was at most a quarter of the duration before the hang; the others
        // may take over a full duration after it: the controllers stopped well within that.
        let stopped_after = stopped - hung_at;
        eprintln!("stopped {stopped_after:?} after the API server hung");
        assert!(stopped_after <= Duration::from_secs(4), "{stopped_after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_graceful_shutdown_releases_the_lease_for_the_next_candidate() {
        let server = Shared::default();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn(run_elected(
            client(&server),
            config("first"),
            async move {
                let _ = shutdown_rx.await;
            },
            |step_down| step_down.wait(),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(holder(&server).as_deref(), Some("first"));
        let second = tokio::spawn(run_elected(
            client(&server),
            config("second"),
            std::future::pending(),
            |step_down| step_down.wait(),
        ));
        // While the first renews, the second waits however long.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(holder(&server).as_deref(), Some("first"));
        let _ = shutdown_tx.send(());
        first.await.expect("first").expect("a graceful stop is Ok");
        let released = Instant::now();
        loop {
            if holder(&server).as_deref() == Some("second") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Taken on the second's next poll (an eighth of the duration), not after the claim.
        eprintln!("taken {:?} after the release", released.elapsed());
        assert!(
            released.elapsed() <= Duration::from_secs(1),
            "{:?}",
            released.elapsed()
        );
        second.abort();
    }
}

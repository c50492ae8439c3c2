//! Subscriptions whose endpoint has failed for days are disabled, and the admin is told.
//!
//! An outbound webhook to an endpoint that is gone keeps every event's delivery retrying for its whole policy,
//! fills the history with failures and hides the ones that matter. So, as Standard Webhooks senders do, an
//! endpoint whose every try has failed for `disable_after` (5 days unless set; `0` never) is disabled: the
//! subscription's `enabled: false` is written into the config as a revision by `renkei` (so every node stops
//! at once, and an admin turns it back on by editing it), with a `subscription.disabled` audit entry saying
//! since when it failed and its last error, a warning in the log, `renkei_subscriptions_disabled_total`, and
//! the dashboard's attention list. Deliveries already queued keep their retries; no new ones are made.
//!
//! "Failed for days" is read from the history: the endpoint's latest try failed, nothing succeeded since a
//! delivery made more than `disable_after` ago, and that delivery has not succeeded.

use std::sync::Arc;
use std::time::Duration;

use renkei_core::config::edit;
use renkei_core::delivery::Status;
use renkei_store::{AttemptFilter, DeliveryFilter};

use crate::app::App;
use crate::live::{self, EditFailure, Editor};

/// How often the subscriptions are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(600);

/// Looks at every enabled subscription once; answers the names it disabled.
pub async fn check_subscriptions(app: &App) -> Vec<String> {
    let loaded = app.loaded();
    let now = app.clock.now();
    let mut disabled = Vec::new();
    for (name, sub) in &loaded.config.subscriptions {
        if !sub.enabled || sub.disable_after.0.is_zero() {
            continue;
        }
        let Ok(window) = chrono::Duration::from_std(sub.disable_after.0) else { continue };
        let flow = renkei_core::config::subscriptions::flow_name(name).to_string();
        let failing = match failing_since(app, &flow, now - window).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(subscription = %name, error = %e, "could not read the subscription's history");
                continue;
            }
        };
        let Some((since, last_error)) = failing else { continue };
        let detail = serde_json::json!({ "failing_since": since, "last_error": last_error, "after": sub.disable_after.0.as_secs() });
        let by = Editor { actor: "renkei", origin: "health", action: "subscription.disabled", why: Some(detail) };
        let what = format!("subscriptions/{name}");
        let result = live::edit(app, by, &what, None, |current| {
            let item = edit::item(&current.text, "subscriptions", name.as_str())?
                .ok_or_else(|| edit::EditError::NotFound { section: "subscriptions".into(), name: name.to_string() })?;
            let item = edit::set_in(&item, "", "enabled", "false")?;
            Ok(edit::set_item(&current.text, "subscriptions", name.as_str(), &item)?)
        })
        .await;
        match result {
            Ok(revision) => {
                tracing::warn!(
                    subscription = %name, failing_since = %since, revision,
                    "disabled a subscription whose endpoint has failed every try since; an admin turns it back on \
                     by setting enabled: true"
                );
                app.metrics.subscription_disabled(name.as_str());
                disabled.push(name.to_string());
            }
            // Another node disabled it first, or an admin edited meanwhile: looked at again next time.
            Err(EditFailure::Conflict(_)) => {}
            Err(e) => tracing::error!(subscription = %name, error = ?e, "disabling a failing subscription failed"),
        }
    }
    disabled
}

/// `Some((since, last error))` when `flow` has failed every try since a delivery made before `cutoff`.
async fn failing_since(
    app: &App,
    flow: &str,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<Option<(chrono::DateTime<chrono::Utc>, Option<String>)>, renkei_store::StoreError> {
    let latest =
        app.store.list_attempts(&AttemptFilter { flow: Some(flow.into()), limit: 1, ..Default::default() }).await?;
    let Some(latest) = latest.first() else { return Ok(None) };
    if latest.outcome == "success" {
        return Ok(None);
    }
    let ok = AttemptFilter { flow: Some(flow.into()), outcome: Some("success".into()), limit: 1, ..Default::default() };
    let last_ok = app.store.list_attempts(&ok).await?.first().map(|a| a.started_at);
    if last_ok.is_some_and(|t| t > cutoff) {
        return Ok(None);
    }
    // The oldest delivery that was made after the last success and before the cutoff, and has not succeeded.
    let filter = DeliveryFilter {
        flow: Some(flow.into()),
        since: last_ok,
        until: Some(cutoff),
        limit: 100,
        ..Default::default()
    };
    let old = app.store.list_deliveries(&filter).await?;
    let stuck = old.iter().rev().find(|d| !matches!(d.status, Status::Succeeded | Status::Skipped));
    Ok(stuck.map(|d| (d.created_at, latest.error.clone())))
}

/// Checks every [`CHECK_EVERY`] until `shutdown`.
pub async fn watch(app: Arc<App>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        check_subscriptions(&app).await;
    }
}

//! Flows: what happens to a source's events, as the loaded config says (source, `when`, ordering, retries,
//! steps), and a preview: the exact requests the flow would send for a chosen recent event, rendered by the
//! same code as `renkei test` (`crate::cli::dry_run_event`) and never sent.

use axum::extract::{Path, Query};
use minijinja::context;
use renkei_core::config::Step;
use renkei_core::flow::Request;
use renkei_store::EventFilter;
use serde::Deserialize;

use super::page::{Answer, Page, Signed};
use super::view;
use crate::cli::{dry_run_event, DryOutcome};

fn step_view(p: &Page, i: usize, s: &Step) -> minijinja::Value {
    let loaded = p.app().loaded();
    let r = &loaded.redactor;
    let t = |x: &Option<renkei_core::config::Tmpl>| x.as_ref().map(|t| view::text(r, &t.0));
    let pairs = |m: &indexmap::IndexMap<String, renkei_core::config::Tmpl>| {
        m.iter().map(|(k, v)| (k.clone(), r.header(k, &v.0))).collect::<Vec<_>>()
    };
    let kintone = s.action.is_some();
    context! {
        index => i,
        name => s.name,
        to => s.to.as_str(),
        kintone => kintone,
        method => (!kintone).then(|| s.method().to_owned()),
        path => t(&s.path),
        url => t(&s.url),
        query => pairs(&s.query),
        headers => pairs(&s.headers),
        format => (!kintone).then(|| format!("{:?}", s.format).to_lowercase()),
        body => s.body.as_ref().map(|b| view::json_text(r, b)),
        action => s.action.map(|a| a.to_string()),
        id => t(&s.id),
        key => s.key.as_ref().map(|k| format!("{} = {}", k.field, view::text(r, &k.value.0))),
        record => s.record.as_ref().map(|b| view::json_text(r, b)),
        status => t(&s.status),
        assignee => t(&s.assignee),
        comment => t(&s.comment),
        signed => s.sign.is_some(),
        echo_key => t(&s.echo_key),
    }
}

pub async fn list(Signed(p): Signed) -> Answer {
    let loaded = p.app().loaded();
    let r = &loaded.redactor;
    let items: Vec<_> = p
        .app()
        .loaded()
        .config
        .flows
        .iter()
        .map(|(name, f)| {
            let steps: Vec<String> = f
                .steps
                .iter()
                .map(|s| match s.action {
                    Some(a) => format!("{} {a}", s.to),
                    None => format!("{} {}", s.to, s.method()),
                })
                .collect();
            context! {
                name => name.as_str(), source => f.source.as_str(), enabled => f.enabled,
                when => f.when.as_ref().map(|w| view::text(r, &w.0)), steps => steps,
                description => f.description,
            }
        })
        .collect();
    Ok(p.render("flows.html", "flows", context! { items => items }))
}

#[derive(Debug, Default, Deserialize)]
pub struct PreviewParams {
    event: Option<String>,
}

pub async fn show(Signed(p): Signed, Path(name): Path<String>, Query(q): Query<PreviewParams>) -> Answer {
    let app = p.app();
    let loaded = app.loaded();
    let Some(flow) = loaded.config.flows.get(name.as_str()) else {
        return Err(p.not_found("Flow", "フロー"));
    };
    let r = &app.loaded().redactor;
    let recent = app
        .store
        .list_events(&EventFilter {
            source: Some(flow.source.to_string()),
            status: Some("accepted".into()),
            limit: 20,
            ..Default::default()
        })
        .await
        .map_err(|e| p.store_fail(e))?;
    let recent_view: Vec<_> = recent
        .iter()
        .map(|e| {
            context! {
                id => e.id, event_type => e.event_type, received_at => e.received_at,
                preview => e.body.as_ref().map(|b| view::one_line(r, b, 80)),
            }
        })
        .collect();
    let chosen = view::given(&q.event);
    let preview = match &chosen {
        None => None,
        Some(id) => Some(preview(&p, &name, &flow.source, id).await?),
    };
    let steps: Vec<_> = flow.steps.iter().enumerate().map(|(i, s)| step_view(&p, i, s)).collect();
    Ok(p.render(
        "flow.html",
        "flows",
        context! {
            name => name,
            source => flow.source.as_str(),
            description => flow.description,
            enabled => flow.enabled,
            when => flow.when.as_ref().map(|w| view::text(r, &w.0)),
            order_key => flow.order_key.as_ref().map(|t| view::text(r, &t.0)),
            skip_echo => flow.skip_echo.as_ref().map(|t| view::text(r, &t.0)),
            echo_window => view::span(flow.echo_window.0),
            retry => context! {
                max_attempts => flow.retry.max_attempts,
                initial => view::span(flow.retry.initial.0),
                max => view::span(flow.retry.max.0),
            },
            steps => steps,
            recent => recent_view,
            chosen => chosen,
            preview => preview,
        },
    ))
}

/// The requests `flow` would send for stored event `id`, rendered and masked.
async fn preview(
    p: &Page,
    flow: &str,
    source: &renkei_core::types::Name,
    id: &str,
) -> Result<minijinja::Value, super::page::Fail> {
    let app = p.app();
    let event = match app.store.get_event(id).await {
        Ok(e) if e.status == "accepted" && e.source == source.as_str() => e,
        Ok(_) | Err(renkei_store::StoreError::NotFound) => {
            return Err(p.not_found("Event of this source", "この受信元のイベント"))
        }
        Err(e) => return Err(p.store_fail(e)),
    };
    let r = &app.loaded().redactor;
    let ev = crate::worker::event_view(&event);
    let run = match dry_run_event(&app.loaded(), flow, &ev) {
        Ok(run) => run,
        Err(e) => return Ok(context! { event_id => id, error => view::text(r, &e) }),
    };
    let (outcome, failure, steps) = match run.outcome {
        DryOutcome::NotRun => ("not_run", None, Vec::new()),
        DryOutcome::Skipped => ("skipped", None, Vec::new()),
        DryOutcome::Fails(e) => ("fails", Some(view::text(r, &e)), Vec::new()),
        DryOutcome::Steps(steps) => (
            "deliver",
            None,
            steps
                .into_iter()
                .map(|s| match s.result {
                    Ok((req, note)) => context! {
                        index => s.index, request => request_view(p, &req), note => note.map(|n| note_text(p, &n)),
                    },
                    Err(e) => context! { index => s.index, error => view::text(r, &e) },
                })
                .collect(),
        ),
    };
    Ok(context! {
        event_id => id,
        event_type => view::text(r, &run.event_type),
        dedupe => run.dedupe.map(|d| view::text(r, &d)),
        order_key => run.order_key.map(|k| view::text(r, &k)),
        outcome => outcome,
        failure => failure,
        steps => steps,
    })
}

/// The dry run's note on a kintone step, in the page's language (the command line's words are English).
fn note_text(p: &Page, note: &str) -> String {
    if p.lang != renkei_core::Lang::Ja {
        return note.to_owned();
    }
    note.replace("the record's id is looked up first:", "先にレコード ID を検索します:").replace(
        "values as rendered; converted to the app's field types when sent",
        "値はテンプレートの結果のままです。送信時にアプリのフィールドの型に変換します",
    )
}

/// A rendered request as the page shows it: secrets masked, JSON pretty, Shift_JIS decoded.
fn request_view(p: &Page, req: &Request) -> minijinja::Value {
    let loaded = p.app().loaded();
    let r = &loaded.redactor;
    let body = match std::str::from_utf8(&req.body) {
        Ok(s) => s.to_owned(),
        Err(_) => encoding_rs::SHIFT_JIS.decode(&req.body).0.into_owned(),
    };
    context! {
        destination => req.destination.as_str(),
        method => req.method,
        url => view::text(r, &req.url),
        headers => view::headers(r, &req.headers),
        body => view::body_text(r, &body),
    }
}

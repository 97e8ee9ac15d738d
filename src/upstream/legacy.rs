//! A legacy HTTP+SSE upstream (protocol 2024-11-05).
//!
//! GET the SSE URL; the first `endpoint` event names the URL to POST
//! messages to; every reply arrives as a `message` event on the GET stream.
//! When that stream ends the connection is closed and the supervisor
//! reconnects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use tokio::task::JoinHandle;

use super::client::{self, HttpError};
use super::http::{io_error, success};
use super::inbox::Inbox;
use super::link::{IoError, LinkError};
use super::sse;
use crate::sync::Locked;

/// An open SSE stream and the endpoint to post to.
#[derive(Debug)]
pub(crate) struct LegacyLink {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    headers: HeaderMap,
    reader: Mutex<Option<JoinHandle<()>>>,
}

// === impl LegacyLink ===

impl LegacyLink {
    /// Opens the SSE stream and waits for the `endpoint` event.
    pub(crate) async fn connect(
        client: reqwest::Client,
        url: reqwest::Url,
        headers: HeaderMap,
        max: usize,
        inbox: &Arc<Inbox>,
    ) -> Result<Self, LinkError> {
        let resp = client
            .get(url.clone())
            .headers(headers.clone())
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| io_error(e.into()))?;
        let mut resp = success(client::from_reqwest(resp))?;
        let mut decoder = sse::Decoder::new(max);
        let (endpoint, early) = loop {
            let Some(chunk) = resp.body_mut().chunk().await.map_err(io_error)? else {
                return Err(LinkError::Closed);
            };
            let mut events = decoder.feed(&chunk).map_err(|_| LinkError::TooLarge(max))?;
            if let Some(pos) = events.iter().position(|e| e.event.as_deref() == Some("endpoint")) {
                let rest = events.split_off(pos + 1);
                let ep = events.pop().expect("found at pos").data;
                break (ep, rest);
            }
        };
        // The endpoint is usually relative (`/messages?session_id=…`).
        let endpoint = url.join(endpoint.trim()).map_err(|e| LinkError::Io(IoError::Endpoint(e)))?;
        let inbox = inbox.clone();
        let reader = tokio::spawn(async move {
            deliver(&inbox, early);
            let reason = loop {
                match resp.body_mut().chunk().await {
                    Ok(Some(chunk)) => match decoder.feed(&chunk) {
                        Ok(events) => deliver(&inbox, events),
                        Err(e) => break e.to_string(),
                    },
                    Ok(None) => break "SSE stream ended".to_owned(),
                    Err(e) => break io_error(e).to_string(),
                }
            };
            inbox.close(reason);
        });
        Ok(LegacyLink { client, endpoint, headers, reader: Mutex::new(Some(reader)) })
    }

    pub(crate) async fn send(&self, body: String, traceparent: Option<&str>) -> Result<(), LinkError> {
        let mut req = self
            .client
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(Duration::from_secs(30));
        if let Some(tp) = traceparent {
            req = req.header(crate::telemetry::trace::TRACEPARENT, tp);
        }
        let resp = req.body(body).send().await.map_err(|e| io_error(HttpError::from(e)))?;
        success(client::from_reqwest(resp)).map(drop)
    }

    pub(crate) fn shutdown(&self) {
        if let Some(r) = self.reader.locked().take() {
            r.abort();
        }
    }
}

fn deliver(inbox: &Inbox, events: Vec<sse::Event>) {
    for ev in events {
        if matches!(ev.event.as_deref(), None | Some("message")) && !ev.data.trim().is_empty() {
            inbox.deliver_owned(ev.data.into_bytes(), None);
        }
    }
}

//! A 2026-07-28 client, a 2025 upstream: the upstream's server requests
//! during a call (`sampling/createMessage`, `elicitation/create`, and
//! `roots/list` from a session's own connection) become an input-required
//! result; the call stays open upstream, parked, until the client retries
//! with its input responses and the sealed `requestState`, which the
//! gateway answers the waiting requests with.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Slot;
use crate::config::ResultCap;
use crate::error::{CallError, ErrorClass};
use crate::protocol::{self, Checked, CheckedBox, Message};
use crate::routing::ix::UpstreamIx;
use crate::upstream::{Called, Relay, Responder, Upstream};

/// Most server requests of one call queued for, or waiting on, its client
/// at once; more are answered with an error.
const MAX_ASKED: usize = 16;

/// Most bytes of `params` those requests may carry together (what one
/// input-required result holds); more are answered with an error.
const MAX_ASKED_BYTES: usize = 4 * 1024 * 1024;

/// A call's future, before it is parked.
pub(crate) type Running = Pin<Box<dyn Future<Output = Called> + Send>>;

/// A server request the upstream sent about the call, and how to answer it.
#[derive(Debug)]
pub(crate) struct Asked {
    msg: Message,
    reply: Responder,
}

/// The relay of a bridged call: related notifications go where they
/// always do; server requests come to the exchange.
#[derive(Debug)]
struct BridgeRelay {
    inner: Option<Arc<dyn Relay>>,
    tx: mpsc::Sender<Asked>,
}

impl Relay for BridgeRelay {
    fn notify(&self, msg: &Message) {
        if let Some(r) = &self.inner {
            r.notify(msg);
        }
    }

    fn request(&self, msg: Message, reply: Responder) {
        if let Err(e) = self.tx.try_send(Asked { msg, reply }) {
            let Asked { reply, .. } = e.into_inner();
            tracing::debug!(upstream = %reply.upstream(), "Refused a server request: too many wait for the client.");
            reply.error(protocol::INTERNAL_ERROR, "Too many requests wait for the client");
        }
    }
}

/// The relay a bridged call is made with (`inner`: where its progress and
/// log messages go), and where its server requests arrive.
pub(crate) fn relay(inner: Option<Arc<dyn Relay>>) -> (Arc<dyn Relay>, mpsc::Receiver<Asked>) {
    let (tx, rx) = mpsc::channel(MAX_ASKED);
    (Arc::new(BridgeRelay { inner, tx }), rx)
}

/// How a bridged call's first leg ended.
#[derive(Debug)]
pub(crate) enum Started {
    /// The call ended without asking anything the client can answer.
    Done(Called),
    /// The upstream asked: the call goes on in its own task.
    Asked { call: JoinHandle<Called>, events: mpsc::Receiver<Asked>, asked: Vec<Asked> },
}

/// Runs `call` until it ends or the upstream asks something the client
/// declared it can answer (`caps`: its `clientCapabilities`); what it did
/// not declare is refused to the upstream, as a 2025 session's would be.
pub(crate) async fn start(mut call: Running, mut events: mpsc::Receiver<Asked>, caps: Option<&CheckedBox>) -> Started {
    loop {
        tokio::select! {
            biased;
            called = &mut call => return Started::Done(called),
            Some(first) = events.recv() => {
                let asked = refuse_undeclared(collect(first, &mut events), caps);
                if !asked.is_empty() {
                    return Started::Asked { call: tokio::spawn(call), events, asked };
                }
            }
        }
    }
}

/// `first` and whatever else is queued.
fn collect(first: Asked, events: &mut mpsc::Receiver<Asked>) -> Vec<Asked> {
    let mut all = vec![first];
    while let Ok(a) = events.try_recv() {
        all.push(a);
    }
    all
}

/// One request asked of the client, waiting for its response.
#[derive(Debug)]
struct Waiting {
    key: String,
    method: String,
    params: Option<CheckedBox>,
    reply: Responder,
}

/// A 2025 upstream's call held open while its client answers.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) id: u128,
    /// Rounds answered so far (a state names the round it was given for).
    pub(crate) round: u32,
    pub(crate) binding: [u8; 32],
    /// Its place in the bounds, and how it ended.
    pub(crate) slot: Slot,
    /// The round its deadline was set for, and when it is.
    pub(crate) deadline: Option<(u32, tokio::time::Instant)>,
    call: JoinHandle<Called>,
    events: mpsc::Receiver<Asked>,
    waiting: Vec<Waiting>,
    next_key: u32,
    /// The instance serving the call.
    pub(crate) upstream: Arc<Upstream>,
    /// Its upstream's index, and the tool's name upstream.
    pub(crate) ix: UpstreamIx,
    pub(crate) original: Arc<str>,
    /// The tool's result cap.
    pub(crate) cap: Option<ResultCap>,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // An exchange dropped unfinished (timed out, its client gone)
        // cancels its call, upstream too.
        self.call.abort();
    }
}

/// What a round of an exchange ended with.
#[derive(Debug)]
pub(crate) enum Step {
    /// The call ended: its result goes to the client.
    Done(Called),
    /// The client must answer more: an input-required result.
    Ask(Exchange),
    /// The exchange was given up (cancelled upstream): this error.
    Failed(CallError),
}

/// What identifies an exchange and what its call's result needs.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) binding: [u8; 32],
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) ix: UpstreamIx,
    pub(crate) original: Arc<str>,
    pub(crate) cap: Option<ResultCap>,
}

impl Exchange {
    /// The exchange of a call whose upstream asked `asked`.
    pub(crate) fn new(
        slot: Slot,
        call: JoinHandle<Called>,
        events: mpsc::Receiver<Asked>,
        asked: Vec<Asked>,
        parts: Parts,
    ) -> Self {
        let Parts { binding, upstream, ix, original, cap } = parts;
        let mut ex = Exchange {
            id: super::state::exchange_id(),
            round: 0,
            binding,
            slot,
            deadline: None,
            call,
            events,
            waiting: Vec::new(),
            next_key: 0,
            upstream,
            ix,
            original,
            cap,
        };
        ex.wait_on(asked);
        ex
    }

    /// Asks the client `asked` too, within [`MAX_ASKED`] requests and
    /// [`MAX_ASKED_BYTES`] of them at once: more are refused to the upstream.
    fn wait_on(&mut self, asked: Vec<Asked>) {
        let mut bytes: usize = self.waiting.iter().map(|w| w.params.as_ref().map_or(0, |p| p.text().len())).sum();
        for Asked { msg, reply } in asked {
            let size = msg.params().map_or(0, |p| p.text().len());
            if self.waiting.len() >= MAX_ASKED || bytes + size > MAX_ASKED_BYTES {
                tracing::debug!(upstream = %reply.upstream(), "Refused a server request: too many wait for the client.");
                reply.error(protocol::INTERNAL_ERROR, "Too many requests wait for the client");
                continue;
            }
            bytes += size;
            self.next_key += 1;
            self.waiting.push(Waiting {
                key: format!("r{}", self.next_key),
                method: msg.method().to_owned(),
                params: msg.params().map(Checked::to_box),
                reply,
            });
        }
    }

    /// The input-required result asking the client what it has not
    /// answered yet, with `state`.
    pub(crate) fn input_required(&self, state: &str) -> Box<protocol::RawValue> {
        let mut out = String::from(r#"{"resultType":"input_required","inputRequests":{"#);
        for (i, w) in self.waiting.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let params = w.params.as_ref().map_or("{}", |p| p.raw().get());
            out.push_str(&format!(
                r#"{}:{{"method":{},"params":{params}}}"#,
                serde_json::to_string(&w.key).expect("a string"),
                serde_json::to_string(&w.method).expect("a string"),
            ));
        }
        out.push_str(r#"},"requestState":"#);
        out.push_str(&serde_json::to_string(state).expect("a string"));
        out.push('}');
        protocol::RawValue::from_string(out).expect("built from valid JSON parts")
    }

    /// The call ended: counted by whether it got a reply.
    fn done(mut self, called: Called) -> Step {
        self.slot.outcome = if called.result.is_ok() { "completed" } else { "failed" };
        Step::Done(called)
    }

    /// Answers what `responses` (a retry's `inputResponses`) answers, then
    /// runs the call until it ends or asks more. A response that is not
    /// an object is refused before anything is answered, and the exchange
    /// handed back unchanged (its state still good).
    pub(crate) async fn resume(
        mut self,
        responses: Option<Checked<'_>>,
        caps: Option<&CheckedBox>,
        max_rounds: u32,
    ) -> Result<Step, (Box<Exchange>, CallError)> {
        let responses = match responses.map(|r| r.object()) {
            None => None,
            Some(Some(o)) => Some(o),
            Some(None) => return Err((Box::new(self), invalid("inputResponses must be an object"))),
        };
        if let Some(r) = &responses {
            for w in &self.waiting {
                if r.get(&w.key).is_some_and(|v| v.object().is_none()) {
                    let e =
                        invalid(&format!("inputResponses.{} must be the result of {} (an object)", w.key, w.method));
                    return Err((Box::new(self), e));
                }
            }
        }
        let before = self.waiting.len();
        let mut left = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            match responses.as_ref().and_then(|r| r.get(&w.key)) {
                Some(v) => w.reply.result(v.raw()),
                None => left.push(w),
            }
        }
        let answered = left.len() < before;
        self.waiting = left;
        // A round is a step only when something was answered: a retry that
        // answers nothing is asked the same again, under the same deadline.
        if answered {
            self.round += 1;
        }
        if self.round > max_rounds {
            self.slot.outcome = "too_many_rounds";
            tracing::warn!(upstream = %self.upstream.id(), rounds = max_rounds, "An upstream kept asking a 2026-07-28 client for input; cancelled.");
            let m = format!("the upstream asked for input more than {max_rounds} times (bridge.max_rounds)");
            return Ok(Step::Failed(CallError::new(ErrorClass::Protocol, Some(self.upstream.id()), m)));
        }
        // The call may have ended meanwhile (its own deadline, an error).
        if self.call.is_finished() {
            let called = (&mut self.call).await.unwrap_or_else(|e| joined(&e));
            return Ok(self.done(called));
        }
        // Something still unanswered: the upstream may wait on it, so ask
        // again now (with anything else it has asked meanwhile).
        if !self.waiting.is_empty() {
            let mut more = Vec::new();
            while let Ok(a) = self.events.try_recv() {
                more.push(a);
            }
            let more = refuse_undeclared(more, caps);
            self.wait_on(more);
            return Ok(Step::Ask(self));
        }
        loop {
            tokio::select! {
                biased;
                called = &mut self.call => return Ok(self.done(called.unwrap_or_else(|e| joined(&e)))),
                Some(first) = self.events.recv() => {
                    let asked = refuse_undeclared(collect(first, &mut self.events), caps);
                    if !asked.is_empty() {
                        self.wait_on(asked);
                        return Ok(Step::Ask(self));
                    }
                }
            }
        }
    }
}

/// Answers the upstream's requests `caps` does not cover with an error,
/// and keeps the rest.
pub(crate) fn refuse_undeclared(asked: Vec<Asked>, caps: Option<&CheckedBox>) -> Vec<Asked> {
    let mut keep = Vec::with_capacity(asked.len());
    for a in asked {
        if protocol::declares(caps.map(CheckedBox::checked), a.msg.method(), a.msg.params()) {
            keep.push(a);
        } else {
            let m = a.msg.method().to_owned();
            tracing::info!(upstream = %a.reply.upstream(), method = %m, "Refused a server request the client did not declare.");
            a.reply.error(protocol::METHOD_NOT_FOUND, &format!("The client does not support {m}"));
        }
    }
    keep
}

/// Answers every request in `asked` with an error (the exchange could not
/// be bridged).
pub(crate) fn refuse_all(asked: Vec<Asked>, why: &str) {
    for a in asked {
        a.reply.error(protocol::INTERNAL_ERROR, why);
    }
}

fn invalid(m: &str) -> CallError {
    CallError::protocol(protocol::INVALID_PARAMS, m)
}

/// The call's task ended without a result (aborted: the gateway is
/// shutting down). Its reason is logged, not told.
pub(crate) fn joined(e: &tokio::task::JoinError) -> Called {
    tracing::warn!(error = %e, "A bridged call's task ended without a result.");
    let err = CallError::new(ErrorClass::Transport, None, "The call ended before its result: call the tool again");
    Called { result: Err(err), class: Some(ErrorClass::Transport), attempts: 0 }
}

//! The vote service's router.
//!
//! | method     | path              | answer |
//! |------------|-------------------|--------|
//! | GET, HEAD  | `/`               | the voting page (and a `voter_id` cookie if none) |
//! | POST       | `/`               | form `vote=<key>`: queue it, `303` back to the page |
//! | POST       | `/api/vote`       | JSON `{"vote":"<key>"}`: queue it, `202` with voter and ballot ids |
//! | GET, HEAD  | `/static/style.css` | the stylesheet |
//! | GET, HEAD  | `/static/favicon.svg` | the icon |
//! | GET        | `/healthz`        | `200` while the process serves |
//! | GET        | `/readyz`         | `200` when Redis answers, else `503` naming why |
//! | GET        | `/metrics`        | Prometheus text |
//!
//! Anything else is `404`, or `405` with `Allow` on a known path. Every answer that refuses a
//! vote queues nothing, except a `503` whose `Vote-Outcome` is `unconfirmed`: Redis gave no
//! answer in time and may still apply it. The voter id is the vote's idempotency key, so
//! voting again after that never counts twice.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::http::header::{self, HeaderValue};
use ::http::{Method, Request, StatusCode};
use askama::Template;
use common::backoff::Outage;
use common::config::{Config, HttpConfig};
use common::embed::Embed;
use common::metrics::{self, Counter, Families, Registry};
use common::web::{self, Resp, read_body};
use domain::options::{OptionKey, Options};
use domain::origin;
use domain::voter::VoterId;
use hyper::body::Incoming;
use serde::Serialize;

use crate::input::{self, InputError};
use crate::page::{STYLE_CSS, VotePage};
use crate::queue::{Queue, QueueError};

/// Cookie naming the voter (see [`VoterId`]): set by the page before the first vote, and by
/// every answer to a vote.
pub const VOTER_COOKIE: &str = "voter_id";
/// Cookie remembering the voter's last queued choice, so the page can mark it.
pub const CHOICE_COOKIE: &str = "vote_choice";
const COOKIE_MAX_AGE: u32 = 365 * 24 * 3600;

/// The vote service: everything the handlers share ([`Embed`] builds it).
pub struct State {
    options: Options,
    question: String,
    queue: Queue,
    /// The replica to name in the page's footer, if any ([`common::replica_name`]).
    replica: Option<String>,
    http: HttpConfig,
    secure_cookie: bool,
    /// Believe `X-Forwarded-Proto` (`http.trust_proxy`).
    trust_proxy: bool,
    metrics: Metrics,
    /// What the log said last about Redis: one line when votes start failing, when the
    /// reason changes and when they are queued again, not one per vote.
    outage: Mutex<Outage>,
    /// `outage` is failing (read on every accepted vote without taking the lock).
    failing: AtomicBool,
}

#[derive(Default)]
struct Metrics {
    accepted: Counter,
    pages: Counter,
    refused_bad_request: Counter,
    refused_too_large: Counter,
    refused_media_type: Counter,
    refused_cross_site: Counter,
    refused_timeout: Counter,
    refused_queue_full: Counter,
    refused_queue_down: Counter,
    unconfirmed: Counter,
}

/// The vote service: nothing runs in the background, so stopping it has nothing to do.
impl Embed for State {
    fn start(config: &Config) -> anyhow::Result<State> {
        Ok(State {
            options: config.options().clone(),
            question: config.question(),
            queue: Queue::new(config)?,
            replica: common::replica_name(),
            http: config.http,
            secure_cookie: config.vote.secure_cookie,
            trust_proxy: config.http.trust_proxy,
            metrics: Metrics::default(),
            outage: Mutex::new(Outage::default()),
            failing: AtomicBool::new(false),
        })
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        route(&self, req).await
    }

    async fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.queue.redis().ping().await {
            problems.push(format!("redis: {}", common::error::describe(&e)));
        }
        problems
    }

    fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        metrics::register(registry, self.clone(), write_metrics);
    }

    async fn stop(&self, _grace: Duration) {}
}

impl State {
    /// A vote the queue did not confirm, for the log.
    fn queue_failed(&self, e: &anyhow::Error, outcome: &'static str) {
        let reason = common::error::describe(e);
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        self.failing.store(true, Ordering::Relaxed);
        if outage.failed(&reason) {
            tracing::warn!(
                error = reason,
                outcome,
                "vote not confirmed; votes are answered 503 until Redis answers (logged again when the reason changes)"
            );
        } else {
            tracing::debug!(error = reason, outcome, "vote not confirmed");
        }
    }

    /// A vote queued: after failures, the log says that votes are queued again.
    fn queue_works(&self) {
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        self.failing.store(false, Ordering::Relaxed);
        if let Some(failures) = outage.recovered() {
            tracing::info!(failures, "votes are queued again");
        }
    }

    /// The same, for a process that is the only one serving the page (the all-in-one
    /// `voting`): no replica to name.
    #[must_use]
    pub fn single_process(mut self) -> State {
        self.replica = None;
        self
    }

    fn page(&self, chosen: Option<&str>) -> VotePage<'_> {
        VotePage::new(
            &self.question,
            &self.options,
            chosen,
            self.replica.as_deref(),
        )
    }
}

async fn route(state: &Arc<State>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    match (req.uri().path(), method) {
        ("/", Method::GET | Method::HEAD) => page(state, &req),
        ("/", Method::POST) => form_vote(state, req).await,
        ("/", _) => web::method_not_allowed("GET, HEAD, POST"),
        ("/api/vote", Method::POST) => api_vote(state, req).await,
        ("/api/vote", _) => web::method_not_allowed("POST"),
        ("/static/style.css", Method::GET | Method::HEAD) => {
            web::asset("text/css; charset=utf-8", STYLE_CSS)
        }
        ("/static/favicon.svg", Method::GET | Method::HEAD) => {
            web::asset("image/svg+xml", common::FAVICON_SVG)
        }
        ("/healthz", Method::GET | Method::HEAD) => web::text(StatusCode::OK, "ok"),
        ("/readyz", Method::GET | Method::HEAD) => web::readiness(&state.problems().await),
        ("/metrics", Method::GET) => web::metrics(|registry| state.register_metrics(registry)),
        ("/static/style.css" | "/static/favicon.svg" | "/healthz" | "/readyz", _) => {
            web::method_not_allowed("GET, HEAD")
        }
        ("/metrics", _) => web::method_not_allowed("GET"),
        _ => web::not_found(),
    }
}

/// Why a vote was refused; each maps to one status.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Input(#[from] InputError),
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    #[error(transparent)]
    Body(#[from] web::BodyError),
    #[error("expected Content-Type {0}")]
    MediaType(&'static str),
    #[error("cross-site vote refused")]
    CrossSite,
    #[error("{}", queue_message(.0))]
    Queue(#[from] QueueError),
}

/// What a voter is told when the queue did not confirm a vote: whether it is known not to be
/// recorded, or unknown, and that voting again is safe either way.
fn queue_message(e: &QueueError) -> String {
    if e.not_recorded() {
        format!("We could not record your vote: {e}. Please try again in a moment.")
    } else {
        "We could not confirm your vote. Voting again is safe: it will not count twice.".into()
    }
}

/// The `Vote-Outcome` header of a vote's answer, for scripts and load generators: `recorded`
/// (202, 303), `not-recorded` (any refusal, the 503s known not to be queued included) or
/// `unconfirmed` (a 503 whose vote may still be counted).
pub const OUTCOME_HEADER: &str = "vote-outcome";

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Input(_) | Refusal::UnknownOption(_) => StatusCode::BAD_REQUEST,
            Refusal::Body(e) => e.status(),
            Refusal::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::CrossSite => StatusCode::FORBIDDEN,
            Refusal::Queue(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the voting page tells a voter: a sentence for people, where the JSON answer
    /// names the technical reason.
    fn for_voters(&self) -> String {
        let why = match self {
            Refusal::Queue(e) => return queue_message(e),
            Refusal::Input(_) | Refusal::UnknownOption(_) => "that choice is not on this poll",
            Refusal::Body(_) | Refusal::MediaType(_) => {
                "your browser's request did not arrive whole"
            }
            Refusal::CrossSite => "it was sent from another site",
        };
        format!("We could not record your vote: {why}. Please vote again with the buttons above.")
    }

    /// `not-recorded` or `unconfirmed`; see [`OUTCOME_HEADER`].
    fn outcome(&self) -> &'static str {
        match self {
            Refusal::Queue(e) if !e.not_recorded() => "unconfirmed",
            _ => "not-recorded",
        }
    }

    fn count(&self, state: &State) {
        let m = &state.metrics;
        let counter = match self {
            Refusal::Input(_) | Refusal::UnknownOption(_) => &m.refused_bad_request,
            Refusal::Body(web::BodyError::TooLarge(_)) => &m.refused_too_large,
            Refusal::Body(web::BodyError::Timeout) => &m.refused_timeout,
            Refusal::Body(web::BodyError::Read) => &m.refused_bad_request,
            Refusal::MediaType(_) => &m.refused_media_type,
            Refusal::CrossSite => &m.refused_cross_site,
            Refusal::Queue(QueueError::Full) => &m.refused_queue_full,
            Refusal::Queue(QueueError::Unavailable(_)) => &m.refused_queue_down,
            Refusal::Queue(QueueError::Unconfirmed(_)) => &m.unconfirmed,
        };
        counter.inc();
        if let Refusal::Queue(QueueError::Unavailable(e) | QueueError::Unconfirmed(e)) = self {
            state.queue_failed(e, self.outcome());
        }
    }

    /// Refusals that are answered with headers of their own: a 503 tells when to try again,
    /// and every answer but a cross-site refusal names the voter (a cross-site request never
    /// gets a cookie).
    fn decorate(&self, resp: &mut Resp, voter: &VoterId, secure: bool) {
        resp.headers_mut()
            .insert(OUTCOME_HEADER, HeaderValue::from_static(self.outcome()));
        if matches!(self, Refusal::Queue(_)) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if !matches!(self, Refusal::CrossSite) {
            set_cookie(resp, VOTER_COOKIE, voter.as_str(), secure);
        }
    }
}

/// A queued vote.
struct Accepted {
    key: OptionKey,
    ballot: domain::queue::EntryId,
}

/// The checks and the append shared by the form and the JSON endpoint, for `voter`.
async fn accept(
    state: &State,
    req: Request<Incoming>,
    voter: &VoterId,
    media_type: &'static str,
    parse: fn(&[u8]) -> Result<String, InputError>,
) -> Result<Accepted, Refusal> {
    if input::is_cross_site(req.headers(), state.trust_proxy) {
        return Err(Refusal::CrossSite);
    }
    if web::content_type(&req).as_deref() != Some(media_type) {
        return Err(Refusal::MediaType(media_type));
    }
    let body = read_body(req, &state.http).await?;
    let raw = parse(&body)?;
    let option = state.options.get(&raw).ok_or(Refusal::UnknownOption(raw))?;
    let ballot = state.queue.append(voter, &option.key).await?;
    state.metrics.accepted.inc();
    state.queue_works();
    Ok(Accepted {
        key: option.key.clone(),
        ballot,
    })
}

/// The voter of a request: its well-formed `voter_id` cookie, if any.
fn voter_of(req: &Request<Incoming>) -> Option<VoterId> {
    input::cookie(req.headers(), VOTER_COOKIE).and_then(VoterId::parse)
}

/// The voting page. A visitor without a voter id gets one now, so that the first vote and
/// any retry of it carry the same id: the worker keeps one row per voter, so a vote sent
/// twice (a retry after an unconfirmed answer, a double click) counts once.
fn page(state: &State, req: &Request<Incoming>) -> Resp {
    state.metrics.pages.inc();
    let chosen = input::cookie(req.headers(), CHOICE_COOKIE);
    let mut resp = render(state.page(chosen), StatusCode::OK);
    if voter_of(req).is_none() && resp.status() == StatusCode::OK {
        let secure = secure_cookies(state, req);
        set_cookie(&mut resp, VOTER_COOKIE, VoterId::random().as_str(), secure);
    }
    resp
}

fn render(page: VotePage<'_>, status: StatusCode) -> Resp {
    match page.render() {
        Ok(body) => {
            let mut resp = web::html(status, body);
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering the vote page failed");
            web::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
        }
    }
}

async fn form_vote(state: &State, req: Request<Incoming>) -> Resp {
    let choice = input::cookie(req.headers(), CHOICE_COOKIE).map(str::to_owned);
    let secure = secure_cookies(state, &req);
    let voter = voter_of(&req).unwrap_or_else(VoterId::random);
    let form = "application/x-www-form-urlencoded";
    match accept(state, req, &voter, form, input::form_vote).await {
        Ok(accepted) => {
            let mut resp = web::text(StatusCode::SEE_OTHER, "vote queued");
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("./"));
            recorded(&mut resp, &voter, &accepted, secure);
            resp
        }
        Err(refusal) => {
            refusal.count(state);
            let mut page = state.page(choice.as_deref());
            page.error = Some(refusal.for_voters());
            let mut resp = render(page, refusal.status());
            refusal.decorate(&mut resp, &voter, secure);
            resp
        }
    }
}

#[derive(Serialize)]
struct VoteAnswer<'a> {
    voter_id: &'a str,
    vote: &'a str,
    ballot: String,
}

#[derive(Serialize)]
struct RefusalAnswer<'a> {
    error: String,
    /// `not-recorded` or `unconfirmed`.
    outcome: &'static str,
    voter_id: &'a str,
}

async fn api_vote(state: &State, req: Request<Incoming>) -> Resp {
    let secure = secure_cookies(state, &req);
    let voter = voter_of(&req).unwrap_or_else(VoterId::random);
    match accept(state, req, &voter, "application/json", input::json_vote).await {
        Ok(accepted) => {
            let answer = VoteAnswer {
                voter_id: voter.as_str(),
                vote: accepted.key.as_str(),
                ballot: accepted.ballot.to_string(),
            };
            let mut resp = web::json(StatusCode::ACCEPTED, &answer);
            recorded(&mut resp, &voter, &accepted, secure);
            resp
        }
        Err(refusal) => {
            refusal.count(state);
            let answer = RefusalAnswer {
                error: refusal.to_string(),
                outcome: refusal.outcome(),
                voter_id: voter.as_str(),
            };
            let mut resp = web::json(refusal.status(), &answer);
            refusal.decorate(&mut resp, &voter, secure);
            resp
        }
    }
}

/// Whether the cookies get `Secure`: `vote.secure_cookie`, or a trusted proxy saying the browser
/// came over HTTPS.
fn secure_cookies(state: &State, req: &Request<Incoming>) -> bool {
    state.secure_cookie || origin::request_scheme(req.headers(), state.trust_proxy) == "https"
}

/// The headers of a queued vote: the outcome, the voter and their choice.
fn recorded(resp: &mut Resp, voter: &VoterId, accepted: &Accepted, secure: bool) {
    resp.headers_mut()
        .insert(OUTCOME_HEADER, HeaderValue::from_static("recorded"));
    set_cookie(resp, VOTER_COOKIE, voter.as_str(), secure);
    set_cookie(resp, CHOICE_COOKIE, accepted.key.as_str(), secure);
}

fn set_cookie(resp: &mut Resp, name: &str, value: &str, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie =
        format!("{name}={value}; Max-Age={COOKIE_MAX_AGE}; Path=/; HttpOnly; SameSite=Lax{secure}");
    let value = HeaderValue::try_from(cookie).expect("ids and option keys are header-safe ASCII");
    resp.headers_mut().append(header::SET_COOKIE, value);
}

/// The service's metrics, read at each scrape.
fn write_metrics(state: &Arc<State>, f: &mut Families<'_>) -> fmt::Result {
    let m = &state.metrics;
    f.counter(
        "vote_votes_accepted_total",
        "Votes queued in the stream.",
        m.accepted.get(),
    )?;
    f.labeled_counter(
        "vote_votes_refused_total",
        "Votes refused, by reason; none of them was queued.",
        "reason",
        &[
            ("bad_request", m.refused_bad_request.get()),
            ("too_large", m.refused_too_large.get()),
            ("media_type", m.refused_media_type.get()),
            ("cross_site", m.refused_cross_site.get()),
            ("timeout", m.refused_timeout.get()),
            ("queue_full", m.refused_queue_full.get()),
            ("queue_unavailable", m.refused_queue_down.get()),
        ],
    )?;
    f.counter(
        "vote_votes_unconfirmed_total",
        "Votes answered 503 because Redis gave no answer in time: they may be counted.",
        m.unconfirmed.get(),
    )?;
    f.counter("vote_pages_total", "Voting pages served.", m.pages.get())?;
    f.counter(
        "vote_connections_write_timeout_total",
        "Connections closed because the client took none of its answer within http.write_timeout_ms (this process).",
        web::WRITE_TIMEOUTS.get(),
    )
}

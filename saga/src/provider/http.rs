//! The payment provider over HTTP: the simulator's server side ([`router`], what
//! `stay payment-sim` serves) and the port's client side ([`HttpProvider`]).
//!
//! The wire format is the port's own types as JSON. Idempotency travels in the bodies (the
//! payment id of a charge or void, the refund id of a refund); an `Idempotency-Key` header is also
//! accepted and must equal that id. A provider fault is a 5xx, a request the provider refuses a
//! 4xx, and `tok_timeout` is a request that never gets a response.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::simulator::Simulator;
use super::{
    ChargeOutcome, ChargeRequest, LedgerEntry, PaymentProvider, ProviderError, RefundOutcome, RefundRequest,
    VoidOutcome, VoidRequest,
};

/// The header that may repeat a request's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// How long [`HttpProvider`] waits for an answer unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where `stay payment-sim` listens unless told otherwise.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8090";

/// The simulator over HTTP: `POST /charges`, `POST /refunds`, `POST /voids`, `GET /ledger`, and
/// `GET /healthz` for health checks.
pub fn router(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/charges", post(charge))
        .route("/refunds", post(refund))
        .route("/voids", post(void))
        .route("/ledger", get(ledger))
        .with_state(sim)
}

async fn charge(State(sim): State<Arc<Simulator>>, headers: HeaderMap, Json(request): Json<ChargeRequest>) -> Response {
    if let Err((status, error)) = same_key(&headers, &request.payment_id.to_string()) {
        return refusal(status, error);
    }
    answer(sim.charge(&request).await)
}

async fn refund(State(sim): State<Arc<Simulator>>, headers: HeaderMap, Json(request): Json<RefundRequest>) -> Response {
    if let Err((status, error)) = same_key(&headers, &request.refund_id.to_string()) {
        return refusal(status, error);
    }
    answer(sim.refund(&request).await)
}

async fn void(State(sim): State<Arc<Simulator>>, headers: HeaderMap, Json(request): Json<VoidRequest>) -> Response {
    if let Err((status, error)) = same_key(&headers, &request.payment_id.to_string()) {
        return refusal(status, error);
    }
    answer(sim.void(&request).await)
}

async fn ledger(State(sim): State<Arc<Simulator>>) -> Response {
    answer(sim.ledger().await)
}

/// An `Idempotency-Key` header, when present, must name the same key as the body: two keys for
/// one request would make "the same request" ambiguous.
fn same_key(headers: &HeaderMap, key: &str) -> Result<(), (StatusCode, String)> {
    match headers.get(IDEMPOTENCY_KEY).map(|value| value.to_str()) {
        None => Ok(()),
        Some(Ok(header)) if header == key => Ok(()),
        Some(Ok(header)) => Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the {IDEMPOTENCY_KEY} header {header:?} differs from the request's id {key}"),
        )),
        Some(Err(_)) => Err((StatusCode::BAD_REQUEST, format!("the {IDEMPOTENCY_KEY} header is not text"))),
    }
}

fn answer<T: Serialize>(result: Result<T, ProviderError>) -> Response {
    match result {
        Ok(outcome) => Json(outcome).into_response(),
        Err(err) => {
            let status = match err {
                ProviderError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                ProviderError::Unavailable(_) => StatusCode::INTERNAL_SERVER_ERROR,
                ProviderError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
                ProviderError::Protocol(_) => StatusCode::BAD_REQUEST,
            };
            refusal(status, err.to_string())
        }
    }
}

fn refusal(status: StatusCode, error: String) -> Response {
    (status, Json(serde_json::json!({ "error": error }))).into_response()
}

/// Where and how [`HttpProvider`] reaches the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProviderConfig {
    /// The provider's base URL, e.g. `http://127.0.0.1:8090` (plain HTTP only: this build has no TLS).
    pub base_url: String,
    /// How long one request may take, answer included, before it is a [`ProviderError::Timeout`].
    pub timeout: Duration,
}

impl Default for HttpProviderConfig {
    fn default() -> Self {
        Self { base_url: DEFAULT_BASE_URL.to_owned(), timeout: DEFAULT_TIMEOUT }
    }
}

/// Why an [`HttpProvider`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpProviderError {
    /// The base URL does not parse or is not plain HTTP.
    #[error("the payment provider URL {url:?} is not usable: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The payment-provider port over HTTP, e.g. to `stay payment-sim`.
#[derive(Clone, Debug)]
pub struct HttpProvider {
    client: reqwest::Client,
    charges: Url,
    refunds: Url,
    voids: Url,
    ledger: Url,
}

impl HttpProvider {
    /// A client of the provider at `config.base_url`, each request bounded by `config.timeout`.
    pub fn new(config: HttpProviderConfig) -> Result<Self, HttpProviderError> {
        let invalid = |reason: String| HttpProviderError::InvalidUrl { url: config.base_url.clone(), reason };
        // The routes hang below the base URL's path, so it must end with a slash for joining.
        let mut base = Url::parse(&config.base_url).map_err(|err| invalid(err.to_string()))?;
        if base.scheme() != "http" {
            return Err(invalid(format!("scheme {:?}: only http is supported (no TLS in this build)", base.scheme())));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let join = |route: &str| base.join(route).map_err(|err| invalid(err.to_string()));
        let client = reqwest::Client::builder().timeout(config.timeout).build().map_err(HttpProviderError::Client)?;
        Ok(Self {
            client,
            charges: join("charges")?,
            refunds: join("refunds")?,
            voids: join("voids")?,
            ledger: join("ledger")?,
        })
    }

    async fn post<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        url: &Url,
        key: String,
        body: &B,
    ) -> Result<T, ProviderError> {
        let response = self
            .client
            .post(url.clone())
            .header(IDEMPOTENCY_KEY, key)
            .json(body)
            .send()
            .await
            .map_err(|err| request_failed(&err))?;
        read(response).await
    }
}

#[async_trait]
impl PaymentProvider for HttpProvider {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
        self.post(&self.charges, request.payment_id.to_string(), request).await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderError> {
        self.post(&self.refunds, request.refund_id.to_string(), request).await
    }

    async fn void(&self, request: &VoidRequest) -> Result<VoidOutcome, ProviderError> {
        self.post(&self.voids, request.payment_id.to_string(), request).await
    }

    async fn ledger(&self) -> Result<Vec<LedgerEntry>, ProviderError> {
        let response = self.client.get(self.ledger.clone()).send().await.map_err(|err| request_failed(&err))?;
        read(response).await
    }
}

/// 2xx: the answer; 5xx: the provider is failing; anything else: it refused what we sent.
async fn read<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, ProviderError> {
    let status = response.status();
    if status.is_success() {
        return response.json::<T>().await.map_err(|err| {
            if err.is_decode() {
                ProviderError::Protocol(format!("the answer does not parse: {}", chain(&err)))
            } else {
                request_failed(&err)
            }
        });
    }
    // The body only explains the status; failing to read it changes nothing.
    let body = response.text().await.unwrap_or_default();
    let detail = format!("HTTP {status}: {}", body.chars().take(500).collect::<String>());
    if status.is_server_error() {
        Err(ProviderError::Unavailable(detail))
    } else {
        Err(ProviderError::Protocol(detail))
    }
}

/// A request that got no (complete) answer.
fn request_failed(err: &reqwest::Error) -> ProviderError {
    if err.is_timeout() {
        ProviderError::Timeout
    } else if err.is_builder() {
        ProviderError::Protocol(chain(err))
    } else {
        ProviderError::Unavailable(chain(err))
    }
}

/// The error and its causes on one line: reqwest's own message leaves out the interesting part
/// ("connection refused").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use stay_domain::{Currency, Money, PaymentId, RefundId, ReservationId};
    use tokio::net::TcpListener;
    use uuid::Uuid;

    use super::*;
    use crate::provider::simulator::cards;
    use crate::provider::{LedgerKind, LedgerStatus};

    async fn serve(sim: Arc<Simulator>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(sim)).await });
        addr
    }

    fn client(addr: SocketAddr, timeout: Duration) -> HttpProvider {
        HttpProvider::new(HttpProviderConfig { base_url: format!("http://{addr}"), timeout }).unwrap()
    }

    fn charge_with(card: &str) -> ChargeRequest {
        let reservation_id = ReservationId::from_uuid(Uuid::new_v4());
        ChargeRequest {
            payment_id: PaymentId::for_reservation(reservation_id),
            reservation_id,
            amount: Money::new(12_000, Currency::USD).unwrap(),
            card_token: card.to_owned(),
        }
    }

    #[tokio::test]
    async fn the_simulator_answers_its_health_check() {
        let addr = serve(Arc::new(Simulator::new())).await;
        let answer = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    }

    #[tokio::test]
    async fn charges_refunds_voids_and_the_ledger_round_trip_over_http() {
        let sim = Arc::new(Simulator::new());
        let provider = client(serve(sim.clone()).await, DEFAULT_TIMEOUT);
        let charge = charge_with(cards::VISA);

        let approved = provider.charge(&charge).await.unwrap();
        assert_eq!(provider.charge(&charge).await.unwrap(), approved, "idempotent over HTTP too");
        let declined = provider.charge(&charge_with(cards::DECLINED)).await.unwrap();
        assert_eq!(declined, ChargeOutcome::Declined { reason: "card_declined".to_owned() });
        let refund = RefundRequest {
            refund_id: RefundId::from_uuid(Uuid::new_v4()),
            payment_id: charge.payment_id,
            reservation_id: charge.reservation_id,
            amount: Money::new(2_000, Currency::USD).unwrap(),
        };
        assert!(matches!(provider.refund(&refund).await.unwrap(), RefundOutcome::Refunded { .. }));
        let void = VoidRequest { payment_id: charge.payment_id, reservation_id: charge.reservation_id };
        let voided = provider.void(&void).await.unwrap();
        assert!(matches!(voided, VoidOutcome::Voided { amount, .. } if amount.amount_minor() == 10_000));
        let never_charged = charge_with(cards::VISA);
        let void = VoidRequest { payment_id: never_charged.payment_id, reservation_id: never_charged.reservation_id };
        assert_eq!(provider.void(&void).await.unwrap(), VoidOutcome::NothingToVoid);

        let ledger = provider.ledger().await.unwrap();
        assert_eq!(ledger, sim.ledger().await.unwrap());
        let kinds: Vec<_> = ledger.iter().map(|entry| (entry.kind, entry.status)).collect();
        assert_eq!(
            kinds,
            [
                (LedgerKind::Charge, LedgerStatus::Succeeded),
                (LedgerKind::Charge, LedgerStatus::Failed),
                (LedgerKind::Refund, LedgerStatus::Succeeded),
                (LedgerKind::Void, LedgerStatus::Succeeded),
                (LedgerKind::Void, LedgerStatus::Failed),
            ]
        );
    }

    #[tokio::test]
    async fn tok_error_answers_500_which_the_client_reports_as_unavailable() {
        let provider = client(serve(Arc::new(Simulator::new())).await, DEFAULT_TIMEOUT);
        let charge = charge_with(cards::ERROR);

        for _ in 0..2 {
            let err = provider.charge(&charge).await.unwrap_err();
            assert!(matches!(&err, ProviderError::Unavailable(detail) if detail.contains("500")), "{err}");
        }
        assert!(matches!(provider.charge(&charge).await.unwrap(), ChargeOutcome::Approved { .. }));
    }

    #[tokio::test]
    async fn tok_timeout_is_a_timeout_within_the_clients_own_deadline() {
        let sim = Arc::new(Simulator::new());
        let provider = client(serve(sim.clone()).await, Duration::from_millis(200));
        let started = Instant::now();

        let err = provider.charge(&charge_with(cards::TIMEOUT)).await.unwrap_err();

        assert_eq!(err, ProviderError::Timeout);
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        // The money was taken all the same: that is what the void is for.
        assert_eq!(sim.ledger().await.unwrap()[0].status, LedgerStatus::Succeeded);
    }

    #[tokio::test]
    async fn a_provider_that_is_not_listening_is_unavailable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);

        let err = client(addr, DEFAULT_TIMEOUT).charge(&charge_with(cards::VISA)).await.unwrap_err();

        assert!(matches!(err, ProviderError::Unavailable(_)), "{err}");
    }

    #[tokio::test]
    async fn a_4xx_is_a_protocol_error_not_a_provider_fault() {
        let addr = serve(Arc::new(Simulator::new())).await;
        let provider = HttpProvider::new(HttpProviderConfig {
            base_url: format!("http://{addr}/no/such/prefix"),
            ..Default::default()
        })
        .unwrap();

        let err = provider.charge(&charge_with(cards::VISA)).await.unwrap_err();

        assert!(matches!(&err, ProviderError::Protocol(detail) if detail.contains("404")), "{err}");
    }

    #[tokio::test]
    async fn an_idempotency_key_header_must_match_the_id_in_the_body() {
        let sim = Arc::new(Simulator::new());
        let addr = serve(sim.clone()).await;
        let charge = charge_with(cards::VISA);
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/charges");

        let matching = http.post(&url).header(IDEMPOTENCY_KEY, charge.payment_id.to_string()).json(&charge);
        assert_eq!(matching.send().await.unwrap().status(), StatusCode::OK);
        let other = http.post(&url).header(IDEMPOTENCY_KEY, "something-else").json(&charge_with(cards::VISA));
        assert_eq!(other.send().await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);

        assert_eq!(sim.ledger().await.unwrap().len(), 1);
    }

    #[test]
    fn only_plain_http_base_urls_are_accepted() {
        for url in ["https://pay.example", "not a url"] {
            let config = HttpProviderConfig { base_url: url.to_owned(), ..Default::default() };
            assert!(matches!(HttpProvider::new(config), Err(HttpProviderError::InvalidUrl { .. })), "{url}");
        }
        let config = HttpProviderConfig { base_url: "http://127.0.0.1:8090/sim".to_owned(), ..Default::default() };
        assert_eq!(HttpProvider::new(config).unwrap().charges.as_str(), "http://127.0.0.1:8090/sim/charges");
    }
}

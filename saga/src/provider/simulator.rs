//! The payment simulator: an in-process payment provider whose card tokens decide the outcome.
//!
//! It keeps a ledger like a real provider and honours idempotency keys the same way: the first
//! answer to a key is the answer forever, and only the first moves money. Its faults are the ones
//! the saga must survive: errors that heal after a few attempts (`tok_error`), charges that go
//! through but are never answered (`tok_timeout`), and slow answers (`tok_slow`). With
//! [`Simulator::with_ledger_file`] the ledger is an append-only JSON-lines file, so a restarted
//! simulator (`stay payment-sim --ledger`, or the one inside `stay serve`, which keeps its file in
//! the data directory) still knows every key it has answered and never charges one twice.
//!
//! Nothing is answered before it is on disk. Calls made at the same time share one `fsync` (a
//! group commit, as the event log does): each call writes its line under the books' lock, then
//! waits, outside it, until a sync covers everything written so far.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use stay_domain::{Currency, Money, PaymentId};

use super::{
    ChargeOutcome, ChargeRequest, LedgerEntry, LedgerKind, LedgerStatus, PaymentProvider, ProviderError, RefundOutcome,
    RefundRequest, VoidOutcome, VoidRequest,
};

/// The card tokens the simulator knows; any other token is declined as `unknown_card`.
pub mod cards {
    /// Approved.
    pub const VISA: &str = "tok_visa";
    /// Declined: `card_declined`.
    pub const DECLINED: &str = "tok_declined";
    /// Declined: `insufficient_funds`.
    pub const INSUFFICIENT_FUNDS: &str = "tok_insufficient_funds";
    /// The provider fails (HTTP 500) for the first [`super::ERROR_ATTEMPTS`] attempts of each
    /// payment, then approves: a provider that heals.
    pub const ERROR: &str = "tok_error";
    /// The charge goes through (money is taken) but the answer never comes.
    pub const TIMEOUT: &str = "tok_timeout";
    /// Approved after [`super::SLOW_DELAY`].
    pub const SLOW: &str = "tok_slow";
}

/// How long a `tok_slow` charge takes to answer.
pub const SLOW_DELAY: Duration = Duration::from_secs(2);

/// How many attempts of one payment with `tok_error` fail before the provider heals.
pub const ERROR_ATTEMPTS: u32 = 2;

/// Decline reason of a charge whose payment was voided before the charge ever went through.
pub const REASON_VOIDED: &str = "voided";

/// Why a ledger file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LedgerFileError {
    /// The file could not be opened, read or repaired.
    #[error("cannot use the ledger file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Another simulator (another process) keeps its books in the file.
    #[error("the ledger file {path} is in use by another process (one simulator per ledger file)")]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// A line other than the last is not a ledger entry: the file was damaged or edited.
    #[error("line {line} of the ledger file {path} is not a ledger entry: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// Why it does not parse.
        source: serde_json::Error,
    },
}

/// The in-process payment provider. Cheap to share behind an `Arc`; every call is serialised
/// through one lock, which is plenty for a simulator.
#[derive(Debug)]
pub struct Simulator {
    books: Arc<Mutex<Books>>,
    /// With a ledger file: what makes its lines durable. Calls then run on the blocking pool.
    sync: Option<Arc<GroupSync>>,
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Simulator {
    /// A simulator with an empty ledger kept in memory only.
    pub fn new() -> Self {
        Self { books: Arc::new(Mutex::new(Books::default())), sync: None }
    }

    /// A simulator whose ledger is the JSON-lines file at `path`: entries already there are loaded
    /// (so their keys keep their answers) and every new entry is appended and synced before it is
    /// answered. A last line torn by a crash mid-write is dropped, since it was never answered.
    pub fn with_ledger_file(path: impl AsRef<Path>) -> Result<Self, LedgerFileError> {
        let path = path.as_ref().to_path_buf();
        let io_error = |source| LedgerFileError::Io { path: path.clone(), source };
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io_error)?;
        // Two simulators appending to one file would each answer from books the other cannot see.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LedgerFileError::InUse { path: path.clone() }),
            Err(std::fs::TryLockError::Error(err)) => return Err(io_error(err)),
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io_error)?;

        let mut books = Books::default();
        let mut offset = 0;
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for (index, line) in lines.iter().enumerate() {
            let is_last = index + 1 == lines.len();
            match serde_json::from_str::<Recorded>(line.trim_end()) {
                Ok(recorded) => {
                    books.apply(recorded);
                    offset += line.len();
                }
                Err(_) if line.trim().is_empty() => offset += line.len(),
                Err(err) if is_last && !line.ends_with('\n') => {
                    tracing::warn!(path = %path.display(), error = %err, "dropping a ledger line torn by a crash");
                    file.set_len(u64::try_from(offset).unwrap_or(u64::MAX)).map_err(io_error)?;
                }
                Err(source) => return Err(LedgerFileError::Corrupt { path, line: index + 1, source }),
            }
        }
        if text[..offset.min(text.len())].chars().last().is_some_and(|last| last != '\n') {
            // A complete entry whose newline was lost: end the line so the next one starts fresh.
            file.write_all(b"\n").and_then(|()| file.sync_data()).map_err(io_error)?;
        }
        let sync = Arc::new(GroupSync {
            file: file.try_clone().map_err(io_error)?,
            path: path.clone(),
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
        });
        books.journal = Some(Journal { file, path, sync: Arc::clone(&sync) });
        Ok(Self { books: Arc::new(Mutex::new(books)), sync: Some(sync) })
    }

    /// Runs `operation` on the books. With a ledger file it runs on the blocking pool, and answers
    /// only once every line written so far is synced: its own, and any line another call wrote
    /// whose answer this one repeats. On the blocking pool it is also cancel-safe: a caller that
    /// gives up cannot leave an entry written to the file but missing from memory, which would let
    /// a retry charge twice.
    async fn with_books<T, F>(&self, operation: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Books) -> Result<T, ProviderError> + Send + 'static,
    {
        let Some(sync) = &self.sync else {
            return operation(&mut *lock(&self.books)?);
        };
        let (books, sync) = (Arc::clone(&self.books), Arc::clone(sync));
        tokio::task::spawn_blocking(move || {
            let answer = operation(&mut *lock(&books)?)?;
            sync.through(sync.written.load(Ordering::Acquire))?;
            Ok(answer)
        })
        .await
        .map_err(|err| ProviderError::Unavailable(format!("the simulator failed: {err}")))?
    }
}

/// One `fsync` for every line written while the previous one ran.
#[derive(Debug)]
struct GroupSync {
    /// The ledger file (a second handle on it), for `sync_data`.
    file: File,
    path: PathBuf,
    /// Lines written so far.
    written: AtomicU64,
    /// Lines known to be on disk.
    synced: Mutex<u64>,
}

impl GroupSync {
    /// Returns once the first `lines` lines are on disk, syncing them (and any written since)
    /// unless a sync that covers them has already run. Callers waiting here while another syncs
    /// find their lines covered when it is done, so one `fsync` answers them all.
    fn through(&self, lines: u64) -> Result<(), ProviderError> {
        let mut synced = self
            .synced
            .lock()
            .map_err(|_| ProviderError::Unavailable("the simulator's sync is poisoned".to_owned()))?;
        if *synced >= lines {
            return Ok(());
        }
        let covered = self.written.load(Ordering::Acquire);
        self.file.sync_data().map_err(|err| {
            ProviderError::Unavailable(format!("the simulator cannot sync its ledger {}: {err}", self.path.display()))
        })?;
        *synced = covered;
        Ok(())
    }
}

fn lock(books: &Mutex<Books>) -> Result<MutexGuard<'_, Books>, ProviderError> {
    books.lock().map_err(|_| ProviderError::Unavailable("the simulator's books are poisoned".to_owned()))
}

#[async_trait]
impl PaymentProvider for Simulator {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
        let owned = request.clone();
        let answer = self.with_books(move |books| books.charge(&owned)).await?;
        // The delay and the silence come after the books are written and the lock released:
        // the money has moved, only the answer is late (or never comes).
        if request.card_token == cards::SLOW {
            tokio::time::sleep(SLOW_DELAY).await;
        }
        match answer {
            Answer::Now(outcome) => Ok(outcome),
            Answer::Never => std::future::pending().await,
        }
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderError> {
        let owned = request.clone();
        self.with_books(move |books| books.refund(&owned)).await
    }

    async fn void(&self, request: &VoidRequest) -> Result<VoidOutcome, ProviderError> {
        let owned = request.clone();
        self.with_books(move |books| books.void(&owned)).await
    }

    async fn ledger(&self) -> Result<Vec<LedgerEntry>, ProviderError> {
        Ok(lock(&self.books)?.entries.clone())
    }
}

/// What the caller of a charge gets.
#[derive(Debug)]
enum Answer {
    Now(ChargeOutcome),
    /// `tok_timeout`: recorded, never answered.
    Never,
}

/// One line of the ledger file: the entry plus what the simulator needs to answer its key again.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Recorded {
    #[serde(flatten)]
    entry: LedgerEntry,
    /// Why a charge was declined or a refund refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// A charge that went through but is never answered (`tok_timeout`).
    #[serde(default, skip_serializing_if = "is_false")]
    unanswered: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// The first answer to a charge's payment id.
#[derive(Clone, Debug)]
enum Charge {
    Approved { amount: Money, provider_ref: String, unanswered: bool },
    Declined { amount: Money, reason: String },
}

impl Charge {
    fn answer(&self) -> Answer {
        match self {
            Self::Approved { unanswered: true, .. } => Answer::Never,
            Self::Approved { provider_ref, .. } => {
                Answer::Now(ChargeOutcome::Approved { provider_ref: provider_ref.clone() })
            }
            Self::Declined { reason, .. } => Answer::Now(ChargeOutcome::Declined { reason: reason.clone() }),
        }
    }
}

#[derive(Debug)]
struct Journal {
    file: File,
    path: PathBuf,
    sync: Arc<GroupSync>,
}

impl Journal {
    /// Appends one line, to be synced by [`GroupSync::through`] before it is answered; on failure
    /// the file is cut back so no half line remains.
    fn append(&mut self, recorded: &Recorded) -> Result<(), ProviderError> {
        let unavailable = |err: &dyn std::fmt::Display| {
            ProviderError::Unavailable(format!("the simulator cannot write its ledger {}: {err}", self.path.display()))
        };
        let mut line = serde_json::to_vec(recorded).map_err(|err| unavailable(&err))?;
        line.push(b'\n');
        let length = self.file.metadata().map_err(|err| unavailable(&err))?.len();
        if let Err(err) = self.file.write_all(&line) {
            // Best effort: the entry is not answered, so it must not survive a restart either.
            let _ = self.file.set_len(length);
            return Err(unavailable(&err));
        }
        self.sync.written.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

/// The simulator's state: the ledger and, derived from it, the answer to every key.
#[derive(Debug, Default)]
struct Books {
    entries: Vec<LedgerEntry>,
    charges: HashMap<PaymentId, Charge>,
    refunds: HashMap<String, RefundOutcome>,
    voids: HashMap<PaymentId, VoidOutcome>,
    /// Failed `tok_error` attempts per payment. Not persisted: a restarted provider may fail a
    /// few more times, which moves no money.
    error_attempts: HashMap<PaymentId, u32>,
    journal: Option<Journal>,
}

impl Books {
    fn charge(&mut self, request: &ChargeRequest) -> Result<Answer, ProviderError> {
        let payment_id = request.payment_id;
        if let Some(charge) = self.charges.get(&payment_id) {
            return Ok(charge.answer());
        }
        let (status, reason, unanswered) = if self.voids.contains_key(&payment_id) {
            // Voided before it went through: a late retry must not take the money after all.
            (LedgerStatus::Failed, Some(REASON_VOIDED), false)
        } else {
            match request.card_token.as_str() {
                cards::VISA | cards::SLOW => (LedgerStatus::Succeeded, None, false),
                cards::TIMEOUT => (LedgerStatus::Succeeded, None, true),
                cards::ERROR => {
                    let attempts = self.error_attempts.entry(payment_id).or_insert(0);
                    *attempts += 1;
                    if *attempts <= ERROR_ATTEMPTS {
                        return Err(ProviderError::Unavailable(format!(
                            "simulated provider error (attempt {attempts} of payment {payment_id})"
                        )));
                    }
                    (LedgerStatus::Succeeded, None, false)
                }
                cards::DECLINED => (LedgerStatus::Failed, Some("card_declined"), false),
                cards::INSUFFICIENT_FUNDS => (LedgerStatus::Failed, Some("insufficient_funds"), false),
                _ => (LedgerStatus::Failed, Some("unknown_card"), false),
            }
        };
        let provider_ref = (status == LedgerStatus::Succeeded).then(|| reference("ch", payment_id.as_uuid()));
        let recorded = Recorded {
            entry: LedgerEntry {
                key: payment_id.to_string(),
                payment_id,
                reservation_id: request.reservation_id,
                kind: LedgerKind::Charge,
                amount: request.amount,
                status,
                provider_ref,
                recorded_at: Utc::now(),
            },
            reason: reason.map(str::to_owned),
            unanswered,
        };
        self.record(recorded)?;
        self.charges
            .get(&payment_id)
            .map(Charge::answer)
            .ok_or_else(|| ProviderError::Unavailable("the simulator lost a charge it recorded".to_owned()))
    }

    fn refund(&mut self, request: &RefundRequest) -> Result<RefundOutcome, ProviderError> {
        let key = request.refund_id.to_string();
        if let Some(outcome) = self.refunds.get(&key) {
            return Ok(outcome.clone());
        }
        let refusal = match self.charges.get(&request.payment_id) {
            Some(Charge::Approved { amount: charged, .. }) => {
                if matches!(self.voids.get(&request.payment_id), Some(VoidOutcome::Voided { .. })) {
                    Some("voided")
                } else if request.amount.is_zero() {
                    Some("invalid_amount")
                } else if request.amount.currency() != charged.currency() {
                    Some("currency_mismatch")
                } else if self.refunded(request.payment_id) + i128::from(request.amount.amount_minor())
                    > i128::from(charged.amount_minor())
                {
                    Some("exceeds_charge")
                } else {
                    None
                }
            }
            Some(Charge::Declined { .. }) | None => Some("no_charge"),
        };
        let status = if refusal.is_some() { LedgerStatus::Failed } else { LedgerStatus::Succeeded };
        let recorded = Recorded {
            entry: LedgerEntry {
                key: key.clone(),
                payment_id: request.payment_id,
                reservation_id: request.reservation_id,
                kind: LedgerKind::Refund,
                amount: request.amount,
                status,
                provider_ref: refusal.is_none().then(|| reference("rf", request.refund_id.as_uuid())),
                recorded_at: Utc::now(),
            },
            reason: refusal.map(str::to_owned),
            unanswered: false,
        };
        self.record(recorded)?;
        self.refunds
            .get(&key)
            .cloned()
            .ok_or_else(|| ProviderError::Unavailable("the simulator lost a refund it recorded".to_owned()))
    }

    fn void(&mut self, request: &VoidRequest) -> Result<VoidOutcome, ProviderError> {
        let payment_id = request.payment_id;
        if let Some(outcome) = self.voids.get(&payment_id) {
            return Ok(outcome.clone());
        }
        // A void reverses what is left of the charge; partial refunds already went back.
        let (amount, status) = match self.charges.get(&payment_id) {
            Some(Charge::Approved { amount, .. }) => {
                let left = i128::from(amount.amount_minor()) - self.refunded(payment_id);
                match i64::try_from(left).ok().filter(|left| *left > 0).map(|left| Money::new(left, amount.currency()))
                {
                    Some(Ok(left)) => (left, LedgerStatus::Succeeded),
                    _ => (Money::zero(amount.currency()), LedgerStatus::Failed),
                }
            }
            Some(Charge::Declined { amount, .. }) => (Money::zero(amount.currency()), LedgerStatus::Failed),
            None => (Money::zero(no_currency()), LedgerStatus::Failed),
        };
        let recorded = Recorded {
            entry: LedgerEntry {
                key: payment_id.to_string(),
                payment_id,
                reservation_id: request.reservation_id,
                kind: LedgerKind::Void,
                amount,
                status,
                provider_ref: (status == LedgerStatus::Succeeded).then(|| reference("vd", payment_id.as_uuid())),
                recorded_at: Utc::now(),
            },
            reason: None,
            unanswered: false,
        };
        self.record(recorded)?;
        self.voids
            .get(&payment_id)
            .cloned()
            .ok_or_else(|| ProviderError::Unavailable("the simulator lost a void it recorded".to_owned()))
    }

    /// Minor units refunded so far from a payment.
    fn refunded(&self, payment_id: PaymentId) -> i128 {
        self.entries
            .iter()
            .filter(|entry| {
                entry.payment_id == payment_id
                    && entry.kind == LedgerKind::Refund
                    && entry.status == LedgerStatus::Succeeded
            })
            .map(|entry| i128::from(entry.amount.amount_minor()))
            .sum()
    }

    /// Writes the entry to the file (when there is one), then to memory. The caller answers it
    /// only once the file is synced ([`Simulator::with_books`]).
    fn record(&mut self, recorded: Recorded) -> Result<(), ProviderError> {
        if let Some(journal) = &mut self.journal {
            journal.append(&recorded)?;
        }
        self.apply(recorded);
        Ok(())
    }

    /// Folds one entry into the books; the same code serves live calls and reloading the file,
    /// so a restarted simulator answers exactly as the one that wrote it.
    fn apply(&mut self, recorded: Recorded) {
        let Recorded { entry, reason, unanswered } = recorded;
        let reason = || reason.clone().unwrap_or_else(|| "declined".to_owned());
        match (entry.kind, entry.status) {
            (LedgerKind::Charge, LedgerStatus::Succeeded) => {
                self.charges.insert(
                    entry.payment_id,
                    Charge::Approved {
                        amount: entry.amount,
                        provider_ref: entry.provider_ref.clone().unwrap_or_default(),
                        unanswered,
                    },
                );
            }
            (LedgerKind::Charge, LedgerStatus::Failed) => {
                self.charges.insert(entry.payment_id, Charge::Declined { amount: entry.amount, reason: reason() });
            }
            (LedgerKind::Refund, LedgerStatus::Succeeded) => {
                let provider_ref = entry.provider_ref.clone().unwrap_or_default();
                self.refunds.insert(entry.key.clone(), RefundOutcome::Refunded { provider_ref });
            }
            (LedgerKind::Refund, LedgerStatus::Failed) => {
                self.refunds.insert(entry.key.clone(), RefundOutcome::Refused { reason: reason() });
            }
            (LedgerKind::Void, LedgerStatus::Succeeded) => {
                let provider_ref = entry.provider_ref.clone().unwrap_or_default();
                self.voids.insert(entry.payment_id, VoidOutcome::Voided { amount: entry.amount, provider_ref });
            }
            (LedgerKind::Void, LedgerStatus::Failed) => {
                self.voids.insert(entry.payment_id, VoidOutcome::NothingToVoid);
            }
            // The simulator never writes pending entries; nothing to answer from one.
            (_, LedgerStatus::Pending) => {}
        }
        self.entries.push(entry);
    }
}

/// The provider's reference for a movement: derived from its key, so it is stable across restarts.
fn reference(prefix: &str, key: uuid::Uuid) -> String {
    format!("sim_{prefix}_{}", key.simple())
}

/// The currency of a void that found no charge at all: ISO 4217's own "no currency" code.
fn no_currency() -> Currency {
    // "XXX" is always a valid code; the fallback only keeps this free of panics.
    Currency::new("XXX").unwrap_or(Currency::USD)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use stay_domain::{RefundId, ReservationId};
    use uuid::Uuid;

    use super::*;

    fn charge_with(card: &str) -> ChargeRequest {
        let reservation_id = ReservationId::from_uuid(Uuid::new_v4());
        ChargeRequest {
            payment_id: PaymentId::for_reservation(reservation_id),
            reservation_id,
            amount: usd(12_000),
            card_token: card.to_owned(),
        }
    }

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::USD).unwrap()
    }

    fn refund_of(charge: &ChargeRequest, minor: i64) -> RefundRequest {
        RefundRequest {
            refund_id: RefundId::from_uuid(Uuid::new_v4()),
            payment_id: charge.payment_id,
            reservation_id: charge.reservation_id,
            amount: usd(minor),
        }
    }

    fn void_of(charge: &ChargeRequest) -> VoidRequest {
        VoidRequest { payment_id: charge.payment_id, reservation_id: charge.reservation_id }
    }

    fn declined(reason: &str) -> ChargeOutcome {
        ChargeOutcome::Declined { reason: reason.to_owned() }
    }

    fn refused(reason: &str) -> RefundOutcome {
        RefundOutcome::Refused { reason: reason.to_owned() }
    }

    async fn approve(sim: &Simulator, card: &str) -> ChargeRequest {
        let request = charge_with(card);
        assert!(matches!(sim.charge(&request).await.unwrap(), ChargeOutcome::Approved { .. }));
        request
    }

    #[tokio::test]
    async fn tok_visa_is_approved_and_takes_the_money_once() {
        let sim = Simulator::new();
        let request = charge_with(cards::VISA);

        let outcome = sim.charge(&request).await.unwrap();

        let expected_ref = format!("sim_ch_{}", request.payment_id.as_uuid().simple());
        assert_eq!(outcome, ChargeOutcome::Approved { provider_ref: expected_ref.clone() });
        let ledger = sim.ledger().await.unwrap();
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0].kind, LedgerKind::Charge);
        assert_eq!(ledger[0].status, LedgerStatus::Succeeded);
        assert_eq!(ledger[0].amount, request.amount);
        assert_eq!(ledger[0].key, request.payment_id.to_string());
        assert_eq!(ledger[0].provider_ref.as_deref(), Some(expected_ref.as_str()));
    }

    #[tokio::test]
    async fn declining_tokens_are_declined_with_their_reason_and_move_no_money() {
        let sim = Simulator::new();
        for (card, reason) in [
            (cards::DECLINED, "card_declined"),
            (cards::INSUFFICIENT_FUNDS, "insufficient_funds"),
            ("tok_mastercard_from_the_future", "unknown_card"),
        ] {
            assert_eq!(sim.charge(&charge_with(card)).await.unwrap(), declined(reason), "{card}");
        }
        let ledger = sim.ledger().await.unwrap();
        assert_eq!(ledger.len(), 3);
        assert!(ledger.iter().all(|entry| entry.status == LedgerStatus::Failed && entry.provider_ref.is_none()));
    }

    #[tokio::test]
    async fn tok_error_fails_twice_per_payment_then_the_provider_heals() {
        let sim = Simulator::new();
        let request = charge_with(cards::ERROR);

        for _ in 0..ERROR_ATTEMPTS {
            assert!(matches!(sim.charge(&request).await, Err(ProviderError::Unavailable(_))));
        }
        assert!(sim.ledger().await.unwrap().is_empty(), "failed attempts move no money");
        assert!(matches!(sim.charge(&request).await.unwrap(), ChargeOutcome::Approved { .. }));

        // Attempts count per payment: another payment starts failing afresh.
        assert!(matches!(sim.charge(&charge_with(cards::ERROR)).await, Err(ProviderError::Unavailable(_))));
        assert_eq!(sim.ledger().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn tok_timeout_takes_the_money_but_never_answers_even_when_retried() {
        tokio::time::pause();
        let sim = Simulator::new();
        let request = charge_with(cards::TIMEOUT);

        for _ in 0..2 {
            let answer = tokio::time::timeout(Duration::from_secs(3600), sim.charge(&request)).await;
            assert!(answer.is_err(), "a tok_timeout charge must never answer");
        }

        let ledger = sim.ledger().await.unwrap();
        assert_eq!(ledger.len(), 1, "charged once despite the retry");
        assert_eq!(ledger[0].status, LedgerStatus::Succeeded);
    }

    #[tokio::test]
    async fn tok_slow_is_approved_after_two_seconds() {
        tokio::time::pause();
        let sim = Simulator::new();
        let started = tokio::time::Instant::now();

        let request = charge_with(cards::SLOW);
        let outcome = sim.charge(&request).await.unwrap();

        assert!(matches!(outcome, ChargeOutcome::Approved { .. }));
        // The timer wheel rounds up to the next millisecond.
        assert!((SLOW_DELAY..SLOW_DELAY + Duration::from_millis(10)).contains(&started.elapsed()));
        // The money moved before the answer came, as with a real slow provider.
        assert_eq!(sim.ledger().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn charging_a_payment_again_answers_the_first_outcome_without_a_second_entry() {
        let sim = Simulator::new();
        let approved = approve(&sim, cards::VISA).await;
        let first = sim.charge(&approved).await.unwrap();
        let refused = charge_with(cards::DECLINED);
        sim.charge(&refused).await.unwrap();

        // Same key, even with another card: the first answer stands.
        let retry = ChargeRequest { card_token: cards::DECLINED.to_owned(), ..approved.clone() };
        assert_eq!(sim.charge(&retry).await.unwrap(), first);
        let retry = ChargeRequest { card_token: cards::VISA.to_owned(), ..refused.clone() };
        assert_eq!(sim.charge(&retry).await.unwrap(), declined("card_declined"));

        assert_eq!(sim.ledger().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn refunds_give_back_up_to_the_charge_and_are_idempotent_by_refund_id() {
        let sim = Simulator::new();
        let charge = approve(&sim, cards::VISA).await;
        let first = refund_of(&charge, 5_000);

        let outcome = sim.refund(&first).await.unwrap();
        assert_eq!(
            outcome,
            RefundOutcome::Refunded { provider_ref: format!("sim_rf_{}", first.refund_id.as_uuid().simple()) }
        );
        assert_eq!(sim.refund(&first).await.unwrap(), outcome, "the same refund id answers the same");

        assert_eq!(sim.refund(&refund_of(&charge, 7_001)).await.unwrap(), refused("exceeds_charge"));
        assert!(matches!(sim.refund(&refund_of(&charge, 7_000)).await.unwrap(), RefundOutcome::Refunded { .. }));
        assert_eq!(sim.refund(&refund_of(&charge, 1)).await.unwrap(), refused("exceeds_charge"));

        let refunded: i64 = sim
            .ledger()
            .await
            .unwrap()
            .iter()
            .filter(|entry| entry.kind == LedgerKind::Refund && entry.status == LedgerStatus::Succeeded)
            .map(|entry| entry.amount.amount_minor())
            .sum();
        assert_eq!(refunded, 12_000);
    }

    #[tokio::test]
    async fn refunds_are_refused_without_an_approved_charge_or_in_another_currency() {
        let sim = Simulator::new();
        assert_eq!(sim.refund(&refund_of(&charge_with(cards::VISA), 100)).await.unwrap(), refused("no_charge"));
        let declined_charge = charge_with(cards::DECLINED);
        sim.charge(&declined_charge).await.unwrap();
        assert_eq!(sim.refund(&refund_of(&declined_charge, 100)).await.unwrap(), refused("no_charge"));

        let charge = approve(&sim, cards::VISA).await;
        let in_euros = RefundRequest { amount: Money::new(100, Currency::EUR).unwrap(), ..refund_of(&charge, 0) };
        assert_eq!(sim.refund(&in_euros).await.unwrap(), refused("currency_mismatch"));
        assert_eq!(sim.refund(&refund_of(&charge, 0)).await.unwrap(), refused("invalid_amount"));
    }

    #[tokio::test]
    async fn voiding_a_charge_that_went_through_gives_it_all_back_once() {
        let sim = Simulator::new();
        let charge = approve(&sim, cards::VISA).await;

        let outcome = sim.void(&void_of(&charge)).await.unwrap();

        assert_eq!(
            outcome,
            VoidOutcome::Voided {
                amount: charge.amount,
                provider_ref: format!("sim_vd_{}", charge.payment_id.as_uuid().simple())
            }
        );
        assert_eq!(sim.void(&void_of(&charge)).await.unwrap(), outcome);
        let voids: Vec<_> =
            sim.ledger().await.unwrap().into_iter().filter(|entry| entry.kind == LedgerKind::Void).collect();
        assert_eq!(voids.len(), 1);
        assert_eq!(voids[0].status, LedgerStatus::Succeeded);
        assert_eq!(voids[0].amount, charge.amount);
        // Nothing is left to refund after a void.
        assert_eq!(sim.refund(&refund_of(&charge, 100)).await.unwrap(), refused("voided"));
    }

    #[tokio::test]
    async fn voiding_a_charge_that_timed_out_reverses_the_money_it_took() {
        let sim = Simulator::new();
        let charge = charge_with(cards::TIMEOUT);
        let _ = tokio::time::timeout(Duration::from_millis(20), sim.charge(&charge)).await;

        let outcome = sim.void(&void_of(&charge)).await.unwrap();

        assert!(matches!(outcome, VoidOutcome::Voided { amount, .. } if amount == charge.amount));
    }

    #[tokio::test]
    async fn void_before_the_charge_went_through_declines_any_late_charge() {
        let sim = Simulator::new();
        let charge = charge_with(cards::ERROR);
        assert!(sim.charge(&charge).await.is_err());

        assert_eq!(sim.void(&void_of(&charge)).await.unwrap(), VoidOutcome::NothingToVoid);
        assert_eq!(sim.void(&void_of(&charge)).await.unwrap(), VoidOutcome::NothingToVoid);
        // The late retry would have succeeded (third tok_error attempt), but the void came first.
        assert_eq!(sim.charge(&charge).await.unwrap(), declined(REASON_VOIDED));
        assert_eq!(
            sim.charge(&ChargeRequest { card_token: cards::VISA.to_owned(), ..charge.clone() }).await.unwrap(),
            declined(REASON_VOIDED)
        );

        let ledger = sim.ledger().await.unwrap();
        assert_eq!(ledger.len(), 2);
        assert_eq!((ledger[0].kind, ledger[0].status), (LedgerKind::Void, LedgerStatus::Failed));
        assert!(ledger[0].amount.is_zero());
        assert_eq!((ledger[1].kind, ledger[1].status), (LedgerKind::Charge, LedgerStatus::Failed));
    }

    #[tokio::test]
    async fn voiding_after_a_partial_refund_gives_back_the_rest() {
        let sim = Simulator::new();
        let charge = approve(&sim, cards::VISA).await;
        sim.refund(&refund_of(&charge, 2_000)).await.unwrap();

        let outcome = sim.void(&void_of(&charge)).await.unwrap();

        assert!(matches!(outcome, VoidOutcome::Voided { amount, .. } if amount == usd(10_000)));
    }

    #[tokio::test]
    async fn a_reloaded_ledger_keeps_every_answer_and_charges_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let sim = Simulator::with_ledger_file(&path).unwrap();
        let approved = approve(&sim, cards::VISA).await;
        let refused_charge = charge_with(cards::INSUFFICIENT_FUNDS);
        sim.charge(&refused_charge).await.unwrap();
        let refund = refund_of(&approved, 3_000);
        let refund_outcome = sim.refund(&refund).await.unwrap();
        let voided = charge_with(cards::VISA);
        sim.void(&void_of(&voided)).await.unwrap();
        let silent = charge_with(cards::TIMEOUT);
        let _ = tokio::time::timeout(Duration::from_millis(20), sim.charge(&silent)).await;
        let before = sim.ledger().await.unwrap();
        drop(sim);

        let sim = Simulator::with_ledger_file(&path).unwrap();

        assert_eq!(sim.ledger().await.unwrap(), before);
        assert!(matches!(sim.charge(&approved).await.unwrap(), ChargeOutcome::Approved { .. }));
        assert_eq!(sim.charge(&refused_charge).await.unwrap(), declined("insufficient_funds"));
        assert_eq!(sim.refund(&refund).await.unwrap(), refund_outcome);
        assert_eq!(sim.refund(&refund_of(&approved, 9_001)).await.unwrap(), refused("exceeds_charge"));
        assert_eq!(sim.charge(&voided).await.unwrap(), declined(REASON_VOIDED));
        assert!(tokio::time::timeout(Duration::from_millis(20), sim.charge(&silent)).await.is_err());
        let after = sim.ledger().await.unwrap();
        // Only the refused refund and the late, declined charge are new.
        assert_eq!(after.len(), before.len() + 2);
        assert_eq!(after[..before.len()], before[..]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn calls_made_at_once_are_each_on_disk_when_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let sim = Arc::new(Simulator::with_ledger_file(&path).unwrap());
        let calls: Vec<_> = (0..64)
            .map(|_| {
                let sim = Arc::clone(&sim);
                tokio::spawn(async move { approve(&sim, cards::VISA).await })
            })
            .collect();
        let mut charges = Vec::new();
        for call in calls {
            charges.push(call.await.unwrap());
        }

        // Read the file as a restarted simulator would.
        drop(sim);
        let reloaded = Simulator::with_ledger_file(&path).unwrap();
        assert_eq!(reloaded.ledger().await.unwrap().len(), 64);
        for charge in &charges {
            assert!(matches!(reloaded.charge(charge).await.unwrap(), ChargeOutcome::Approved { .. }));
        }
        assert_eq!(reloaded.ledger().await.unwrap().len(), 64, "no charge was taken twice");
    }

    #[tokio::test]
    async fn a_line_torn_by_a_crash_is_dropped_and_the_file_stays_appendable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let sim = Simulator::with_ledger_file(&path).unwrap();
        approve(&sim, cards::VISA).await;
        drop(sim);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"key":"half a li"#).unwrap();
        drop(file);

        let sim = Simulator::with_ledger_file(&path).unwrap();
        assert_eq!(sim.ledger().await.unwrap().len(), 1);
        approve(&sim, cards::VISA).await;
        drop(sim);

        let sim = Simulator::with_ledger_file(&path).unwrap();
        assert_eq!(sim.ledger().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_ledger_file_serves_one_simulator_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let first = Simulator::with_ledger_file(&path).unwrap();

        let err = Simulator::with_ledger_file(&path).unwrap_err();
        assert!(matches!(err, LedgerFileError::InUse { .. }), "{err}");

        drop(first);
        Simulator::with_ledger_file(&path).expect("free again once the first is gone");
    }

    #[tokio::test]
    async fn a_damaged_line_in_the_middle_of_the_ledger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        std::fs::write(&path, "not json\n{}\n").unwrap();

        let err = Simulator::with_ledger_file(&path).unwrap_err();

        assert!(matches!(err, LedgerFileError::Corrupt { line: 1, .. }), "{err}");
    }
}

//! The dashboard's public and signed-in screens in a real browser against a real `stay serve`:
//! the rooms screen lists the rooms registered through the API and takes a reservation onto its
//! room's card live (counts and occupancy, within 2 s, no reload); a guest signed in by the link
//! `stay token --url` prints sees their reservation turn from pending to confirmed live; a host
//! signed in by pasting a token sees their rooms and their rooms' reservations, and a room's page
//! its booked stays and reviews with replies; a problem from the API is shown as an alert. None
//! of these screens writes an error to the browser's console. Each screen is saved as a
//! screenshot under `target/dashboard-screenshots/`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use stay_tests::bodies::day;
use stay_tests::browser::{Browser, PHONE};
use stay_tests::{Answer, Backend, StayServer};

/// Registers a room as `host`; answers its id.
async fn register_room(server: &StayServer, host: &str, name: &str, address: &str, price_minor: i64) -> String {
    let body = json!({
        "name": name,
        "description": "Bright, quiet, two windows on the river.",
        "address": address,
        "nightly_price": {"amount_minor": price_minor, "currency": "EUR"},
        "capacity": 2
    });
    let answer = server.post("/v1/rooms", host, &body).await;
    assert_eq!(answer.status, 201, "registering {name}: {}", answer.text);
    answer.field("room_id").to_owned()
}

/// Asks for nights `from..from+nights` of `room_id` as `guest` paying with `card`; with `wait`,
/// answers once the saga has settled it.
async fn reserve(server: &StayServer, guest: &str, room_id: &str, from: u64, nights: u64, card: &str, wait: bool) -> Answer {
    let body = json!({
        "room_id": room_id,
        "check_in": day(from), "check_out": day(from + nights), "guests": 2,
        "payment": {"card_token": card}
    });
    let headers: &[(&str, &str)] = if wait { &[("prefer", "wait=25")] } else { &[] };
    let answer = server.send(Method::POST, "/v1/reservations", Some(guest), Some(&body), headers).await;
    assert!(answer.status == 200 || answer.status == 202, "reserving: {} {}", answer.status, answer.text);
    answer
}

/// Marks the page so a later check can tell it was not loaded again.
async fn mark_page(browser: &Browser) {
    browser.execute("window.__stayNotReloaded = true; return true;", vec![]).await;
}

async fn assert_not_reloaded(browser: &Browser, what: &str) {
    let kept = browser.execute("return window.__stayNotReloaded === true;", vec![]).await;
    assert_eq!(kept, Value::Bool(true), "the page was loaded again while {what}: it must update in place");
}

/// The live stream of the screen is connected.
async fn wait_live(browser: &Browser) {
    browser.wait_for(".live[data-state='open']").await;
}

fn card(room_id: &str) -> String {
    format!("article.room-card[data-room-id='{room_id}']")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rooms_screen_lists_the_rooms_registered_through_the_api_and_filters_them() {
    let server = StayServer::start(Backend::Sqlite).await;
    let ana = server.token("host-ana", "host");
    let bo = server.token("host-bo", "host");
    let loft = register_room(&server, &ana, "Harbour loft", "1 Quay Street, Porto", 12_000).await;
    let cabin = register_room(&server, &bo, "Cedar cabin", "7 Elm Road, Oslo", 9_000).await;
    let attic = register_room(&server, &ana, "Canal house attic", "3 Market Square, Ghent", 15_000).await;
    let delisted = server.send(Method::DELETE, &format!("/v1/rooms/{attic}"), Some(&ana), None, &[]).await;
    assert_eq!(delisted.status, 200, "{}", delisted.text);

    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.url())).await;
    for (id, name) in [(&loft, "Harbour loft"), (&cabin, "Cedar cabin")] {
        browser.wait_for_text(&format!("{} h2", card(id)), name).await;
    }
    // The delisted room is still a room of roomview: shown, marked as not listed.
    browser.wait_for(&format!("{} [data-status='delisted']", card(&attic))).await;
    assert!(browser.text(&card(&loft)).await.contains("€120.00"), "the price is on the card");
    assert!(browser.text(&card(&cabin)).await.contains("host-bo"), "the host is on the card");
    assert_eq!(browser.count(&format!("{} .strip .night", card(&loft))).await, 60, "60 nights in the strip");
    wait_live(&browser).await;
    browser.screenshot("rooms").await;

    // Searching narrows the list; the filters are kept in the address so a view can be shared.
    browser.type_into("#room-search", "oslo").await;
    browser.wait_until_gone(&card(&loft)).await;
    assert_eq!(browser.count("article.room-card").await, 1, "only the room in Oslo");
    assert!(browser.url().await.contains("q=oslo"), "the search is in the address: {}", browser.url().await);
    browser.execute("const s = document.querySelector('#room-search'); s.value = ''; s.dispatchEvent(new Event('input')); return true;", vec![]).await;
    browser.execute("const s = document.querySelector('#room-listed'); s.value = 'listed'; s.dispatchEvent(new Event('change')); return true;", vec![]).await;
    browser.wait_until_gone(&card(&attic)).await;
    assert_eq!(browser.count("article.room-card").await, 2, "the two listed rooms");
    browser.execute("const s = document.querySelector('#room-host'); s.value = 'host-ana'; s.dispatchEvent(new Event('change')); return true;", vec![]).await;
    browser.wait_until_gone(&card(&cabin)).await;
    assert_eq!(browser.count("article.room-card").await, 1, "host-ana's listed room");

    // The table layout shows the same rooms, row by row.
    browser.goto(&format!("{}/#/?layout=table", server.url())).await;
    browser.wait_for(&format!("tr.room-row[data-room-id='{cabin}']")).await;
    assert_eq!(browser.count("tr.room-row").await, 3);
    browser.screenshot("rooms-table").await;

    browser.resize(PHONE).await;
    browser.goto(&format!("{}/", server.url())).await;
    browser.wait_for(&card(&loft)).await;
    let overflow = browser.execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![]).await;
    assert_eq!(overflow, json!(0), "nothing sticks out sideways at 375 px");
    browser.screenshot("rooms-phone").await;
    browser.assert_no_console_errors("the rooms screen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_made_through_the_api_shows_on_its_room_card_within_two_seconds_without_a_reload() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-ana", "host");
    let guest = server.token("guest-1", "guest");
    let loft = register_room(&server, &host, "Harbour loft", "1 Quay Street, Porto", 12_000).await;
    let cabin = register_room(&server, &host, "Cedar cabin", "7 Elm Road, Oslo", 9_000).await;

    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.url())).await;
    browser.wait_for(&card(&loft)).await;
    wait_live(&browser).await;
    mark_page(&browser).await;
    let confirmed = format!("{} li[data-count='confirmed'] .n", card(&loft));
    assert_eq!(browser.text(&confirmed).await, "0");

    // Three nights from tomorrow, confirmed when the API answers (Prefer: wait).
    let answer = reserve(&server, &guest, &loft, 1, 3, "tok_visa", true).await;
    assert_eq!(answer.field("status"), "confirmed", "{}", answer.text);
    let answered = Instant::now();
    browser.wait_for_text_within(&confirmed, "1", Duration::from_secs(2)).await;
    browser.wait_for_within(&format!("{} .strip[data-booked-nights='3']", card(&loft)), Duration::from_secs(2)).await;
    browser.wait_for_text_within(&format!("{} [data-money='charged']", card(&loft)), "€360.00", Duration::from_secs(2)).await;
    let shown_after = answered.elapsed();
    assert!(shown_after < Duration::from_secs(2), "the card showed the reservation after {shown_after:?}");
    assert_eq!(browser.count(&format!("{} .night.booked", card(&loft))).await, 3, "three nights booked");
    // The other room is untouched, and the summary counts the stay.
    assert_eq!(browser.text(&format!("{} li[data-count='confirmed'] .n", card(&cabin))).await, "0");
    browser.wait_for_text("[data-stat='reservations'] .stat-value", "1").await;
    assert_not_reloaded(&browser, "a reservation was made").await;
    browser.screenshot("rooms-live").await;

    // A declined card counts as rejected, live too, and books nothing.
    let declined = reserve(&server, &guest, &cabin, 2, 2, "tok_declined", true).await;
    assert_eq!(declined.field("status"), "rejected", "{}", declined.text);
    browser
        .wait_for_text_within(&format!("{} li[data-count='rejected'] .n", card(&cabin)), "1", Duration::from_secs(2))
        .await;
    assert_eq!(browser.count(&format!("{} .night.booked", card(&cabin))).await, 0);

    // The room's own page shows the stay and follows the room live as well.
    browser.click(&format!("{} h2 a", card(&loft))).await;
    browser.wait_for_text("h1", "Harbour loft").await;
    browser.wait_for(&format!("tr[data-reservation-id='{}']", answer.field("reservation_id"))).await;
    wait_live(&browser).await;
    let later = reserve(&server, &guest, &loft, 10, 2, "tok_visa", true).await;
    browser
        .wait_for_within(&format!("tr[data-reservation-id='{}']", later.field("reservation_id")), Duration::from_secs(2))
        .await;
    assert_not_reloaded(&browser, "the room page followed a second reservation").await;
    browser.assert_no_console_errors("the rooms screen and a room's page, live").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_signed_in_by_link_sees_their_reservation_turn_from_pending_to_confirmed_live() {
    let server = StayServer::start(Backend::Sqlite).await;
    let host = server.token("host-ana", "host");
    let guest = server.token("guest-1", "guest");
    let other_guest = server.token("guest-2", "guest");
    let loft = register_room(&server, &host, "Harbour loft", "1 Quay Street, Porto", 12_000).await;
    // Another guest's reservation is not shown to this one.
    let others = reserve(&server, &other_guest, &loft, 20, 2, "tok_visa", true).await;

    let browser = Browser::start().await;
    // What `stay token --url` prints: the token in the fragment, which the page takes and drops.
    browser.goto(&format!("{}/#token={guest}", server.url())).await;
    browser.wait_for_text("h1", "My stays").await;
    let url = browser.url().await;
    assert!(url.ends_with("#/me") && !url.contains(&guest), "the token left the address bar: {url}");
    browser.wait_for_text("#site-header .who", "guest-1").await;
    browser.wait_for_text("main", "No reservations yet").await;
    wait_live(&browser).await;
    mark_page(&browser).await;
    // Every status the reservation's card shows, in order.
    browser
        .execute(
            "window.__statuses = [];
             const note = () => {
               for (const el of document.querySelectorAll('li.res-card[data-reservation-id]')) {
                 const seen = el.dataset.reservationId + ' ' + el.dataset.status;
                 if (window.__statuses[window.__statuses.length - 1] !== seen) window.__statuses.push(seen);
               }
             };
             new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true});
             return true;",
            vec![],
        )
        .await;

    // tok_slow: the provider approves after 2 s, so the reservation is pending for a while.
    let answer = reserve(&server, &guest, &loft, 3, 2, "tok_slow", false).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let id = answer.field("reservation_id").to_owned();
    browser.wait_for(&format!("li.res-card[data-reservation-id='{id}'][data-status='pending']")).await;
    browser.screenshot("me-guest-pending").await;
    browser.wait_for_within(&format!("li.res-card[data-reservation-id='{id}'][data-status='confirmed']"), Duration::from_secs(15)).await;
    let statuses = browser.execute("return window.__statuses.filter(s => s.startsWith(arguments[0]));", vec![json!(id)]).await;
    assert_eq!(statuses, json!([format!("{id} pending"), format!("{id} confirmed")]), "pending, then confirmed");
    // The payment shows with it, and the notification arrives live too.
    browser.wait_for_text(&format!("li.res-card[data-reservation-id='{id}']"), "€240.00").await;
    browser.wait_for(&format!("li.res-card[data-reservation-id='{id}'] [data-status='approved']")).await;
    browser.wait_for("li[data-kind='reservation_confirmed']").await;
    assert_eq!(browser.count(&format!("li.res-card[data-reservation-id='{}']", others.field("reservation_id"))).await, 0);
    assert_not_reloaded(&browser, "the reservation was confirmed").await;
    browser.screenshot("me-guest").await;
    browser.resize(PHONE).await;
    browser.screenshot("me-guest-phone").await;

    // The guest cancels from the page: asked first, then the card follows to cancelled, refunded.
    let card = format!("li.res-card[data-reservation-id='{id}']");
    browser.click(&format!("{card} button[data-action='cancel']")).await;
    browser.wait_for_text("dialog[open] h2", "Cancel your stay at Harbour loft?").await;
    browser.screenshot("me-guest-cancel").await;
    browser.click("dialog[open] button[data-confirm='yes']").await;
    browser.wait_for_within(&format!("{card}[data-status='cancelled']"), Duration::from_secs(15)).await;
    browser.wait_for(&format!("{card} [data-status='refunded']")).await;
    browser.wait_for("li[data-kind='reservation_cancelled']").await;
    assert_not_reloaded(&browser, "the reservation was cancelled").await;
    browser.assert_no_console_errors("a guest's page").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_signed_in_with_a_pasted_token_sees_their_rooms_their_bookings_and_the_reviews() {
    let server = StayServer::start(Backend::Sqlite).await;
    let ana = server.token("host-ana", "host");
    let bo = server.token("host-bo", "host");
    let guest = server.token("guest-1", "guest");
    let loft = register_room(&server, &ana, "Harbour loft", "1 Quay Street, Porto", 12_000).await;
    let attic = register_room(&server, &ana, "Canal house attic", "3 Market Square, Ghent", 15_000).await;
    let cabin = register_room(&server, &bo, "Cedar cabin", "7 Elm Road, Oslo", 9_000).await;
    let stay = reserve(&server, &guest, &loft, 2, 3, "tok_visa", true).await;
    assert_eq!(stay.field("status"), "confirmed", "{}", stay.text);
    let stay_id = stay.field("reservation_id").to_owned();
    let elsewhere = reserve(&server, &guest, &cabin, 2, 2, "tok_visa", true).await;
    let review = server
        .post(&format!("/v1/rooms/{loft}/reviews"), &guest, &json!({"reservation_id": stay_id, "rating": 4, "comment": "Lovely light, thin walls."}))
        .await;
    assert_eq!(review.status, 201, "{}", review.text);
    let reply = server
        .post(&format!("/v1/reviews/{}/reply", review.field("review_id")), &ana, &json!({"comment": "Thank you! New windows come in spring."}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let browser = Browser::start().await;
    browser.goto(&format!("{}/#/signin", server.url())).await;
    browser.type_into("#token", &ana).await;
    browser.wait_for_text("[role='status']", "A token for host-ana (host)").await;
    browser.screenshot("signin").await;
    browser.click("form.signin-form button[type='submit']").await;
    browser.wait_for_text("h1", "My rooms").await;
    for room in [&loft, &attic] {
        browser.wait_for(&card(room)).await;
    }
    assert_eq!(browser.count(&card(&cabin)).await, 0, "another host's room is not among mine");
    browser.wait_for(&format!("li.res-card[data-reservation-id='{stay_id}'][data-status='confirmed']")).await;
    assert!(browser.text(&format!("li.res-card[data-reservation-id='{stay_id}']")).await.contains("guest-1"), "a host sees who booked");
    assert_eq!(browser.count(&format!("li.res-card[data-reservation-id='{}']", elsewhere.field("reservation_id"))).await, 0);
    wait_live(&browser).await;
    mark_page(&browser).await;

    // A new reservation of one of the host's rooms arrives live.
    let next = reserve(&server, &guest, &attic, 4, 2, "tok_visa", true).await;
    browser.wait_for(&format!("li.res-card[data-reservation-id='{}'][data-status='confirmed']", next.field("reservation_id"))).await;
    browser.wait_for_text(&format!("{} li[data-count='confirmed'] .n", card(&attic)), "1").await;
    assert_not_reloaded(&browser, "a reservation of the host's room was made").await;
    browser.screenshot("me-host").await;

    // The room's page: the booked stay, and the review with the host's reply.
    browser.click(&format!("{} a", card(&loft))).await;
    browser.wait_for_text("h1", "Harbour loft").await;
    browser.wait_for(&format!("tr[data-reservation-id='{stay_id}']")).await;
    browser.wait_for_text(&format!("article.review[data-review-id='{}']", review.field("review_id")), "Lovely light, thin walls.").await;
    browser.wait_for_text("article.review .reply", "New windows come in spring.").await;
    assert!(!browser.text("article.review").await.contains("guest-1"), "the public page names no guest");
    browser.screenshot("room").await;
    browser.resize(PHONE).await;
    browser.screenshot("room-phone").await;
    browser.assert_no_console_errors("a host's page, sign-in and a room's page").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_are_shown_as_alerts_and_operator_screens_ask_for_an_admin() {
    let server = StayServer::start(Backend::Sqlite).await;
    let browser = Browser::start().await;

    // An unknown room: the API's problem document, shown with its title and code.
    browser.goto(&format!("{}/#/rooms/0b8f1d0e-5b1a-4a53-9d7e-2a7c3e1f0c11", server.url())).await;
    let alert = browser.wait_for_text("[role='alert']", "room_not_found").await;
    let text = alert.text().await.expect("the alert's text");
    assert!(text.contains("There is no such room") && text.contains("404"), "{text}");

    // A token the server did not sign is refused when pasted, and not kept.
    browser.goto(&format!("{}/#/signin", server.url())).await;
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5Iiwicm9sZSI6ImFkbWluIiwiZXhwIjo0MTAyNDQ0ODAwfQ.c2lnbmF0dXJl";
    browser.type_into("#token", forged).await;
    browser.click("form.signin-form button[type='submit']").await;
    browser.wait_for_text("[role='alert']", "unauthenticated").await;
    browser.wait_for_text("#site-header", "Sign in").await;
    let kept = browser.execute("return sessionStorage.getItem('stay.token');", vec![]).await;
    assert_eq!(kept, Value::Null, "a refused token is forgotten");

    // Operator screens say who may open them, without asking the API.
    let guest = server.token("guest-1", "guest");
    browser.goto(&format!("{}/#token={guest}", server.url())).await;
    browser.wait_for_text("h1", "My stays").await;
    browser.goto(&format!("{}/#/ops/sagas", server.url())).await;
    browser.wait_for_text("h1", "Operators only").await;
    browser.goto(&format!("{}/#/nowhere", server.url())).await;
    browser.wait_for_text("[role='alert']", "screen_not_found").await;
    browser.screenshot("problem").await;
}

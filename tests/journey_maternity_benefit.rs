//! The maternity benefit journey (`processes/maternity-benefit.bpmn`) end to end: a mother applies at a
//! social-protection office, is verified, enrolled and paid every month on her payment date — the manual
//! clock moved month by month — until the child turns five, her status readable through the API; a
//! `benefitStopped` message that stops the payments; a Payments BB that is down, so the payment is
//! retried with its back-off, becomes an incident, and is paid exactly once after an operator resolves it;
//! a mother whose identity is not verified; and a stop that arrives while a payment is in flight, held
//! (buffered for its time to live) until that payment is recorded, so her totals include it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use govflow_connectors::sandbox::{Fault, Person, Service};
use govflow_engine::engine::idempotency_key;
use govflow_engine::runtime::{Event, InstanceKey};
use govflow_engine::store::Store;
use serde_json::{json, Value};
use support::{person_json, Journey, Method, Route};

fn office_application(mother: &Person, child: &str, birth_date: &str) -> (String, Value) {
    let certificate =
        format!("BC-{}-{}-{}", birth_date.replace('-', ""), mother.national_id, child.to_uppercase());
    let variables = json!({
        "birth": {"certificateNumber": certificate, "birthDate": birth_date, "childFirstName": child},
        "mother": person_json(mother),
    });
    (certificate, variables)
}

/// A living woman with a phone who has no household in the social registry and no wallet in the Payments
/// BB's account mapper.
fn new_mother(journey: &Journey) -> Person {
    let seed = journey.seed();
    let mapped: Vec<Value> = journey.sandbox.beneficiaries();
    seed.persons()
        .iter()
        .find(|p| {
            p.gender == "female"
                && !p.deceased
                && p.phone.is_some()
                && p.age() >= 18
                && seed.household_of(&p.national_id).is_none()
                && !mapped.iter().any(|b| b["payeeIdentity"] == p.national_id.as_str())
        })
        .expect("the seed has a woman outside the social registry")
        .clone()
}

/// The benefit's status as a third-party app reads it: the `benefit` variable of the API's instance view.
async fn status_through_the_api(journey: &Journey, key: InstanceKey) -> Value {
    let view = journey.api(Method::GET, &format!("/api/v1/instances/{key}"), None, 200).await;
    view["variables"]["benefit"].clone()
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("not a number: {value}"))
}

/// Waits until payment `n` is recorded and the instance waits for the next payment date (or has ended).
async fn paid(journey: &Journey, key: InstanceKey, n: u64) -> Value {
    journey
        .until(format!("payment {n} recorded"), || {
            let benefit = journey.var(key, "benefit");
            let waiting = !journey.open_timers(key).is_empty() || !journey.stored(key).state.is_active();
            (benefit["paymentsMade"] == n && waiting).then_some(benefit)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pays_once_a_month_until_the_child_turns_five_with_the_status_readable_through_the_api() {
    let journey = Journey::start("2027-01-31T08:00:00Z", Route::Direct).await;
    let mother = journey.seed().verified_mother().clone();
    let phone = mother.phone.clone().unwrap();
    let household_before = journey.records("social-registry", "nationalId", &mother.national_id);
    assert_eq!(household_before.len(), 1);
    // The child turns five on 2027-04-15. She enrols on 31 January: payments on the 31st, then the
    // last day of February and 31 March (counted from the enrolment date, so month ends do not drift).
    let (certificate, variables) = office_application(&mother, "Asha", "2022-04-15");
    let key = journey.start_instance("maternity-benefit", variables).await;

    // Enrolled, told, and waiting for 09:00 on the enrolment day: nothing paid before then.
    let due = journey.timer(key, "Event_NextPaymentDate").await;
    assert_eq!(due.to_rfc3339(), "2027-01-31T09:00:00+00:00");
    let status = status_through_the_api(&journey, key).await;
    assert_eq!(
        (status["paymentsMade"].as_u64(), status["nextPaymentDate"].as_str()),
        (Some(0), Some("2027-01-31"))
    );
    assert_eq!(
        (status["startDate"].as_str(), status["endDate"].as_str()),
        (Some("2027-01-31"), Some("2027-04-15"))
    );
    assert_eq!(journey.var(key, "motherIdentity")["verified"], true);
    assert_eq!(journey.var(key, "wallet")["status"], "RECEIVED");
    let household = journey.records("social-registry", "nationalId", &mother.national_id);
    assert_eq!(household.len(), 1, "her household is updated, not duplicated: {household:#?}");
    let support = &household[0]["maternalSupport"];
    assert_eq!(
        (support["status"].as_str(), support["childId"].as_str(), support["until"].as_str()),
        (Some("active"), Some(certificate.as_str()), Some("2027-04-15"))
    );
    let programmes = household[0]["programmes"].as_array().unwrap();
    assert_eq!(programmes.iter().filter(|p| *p == "maternal-support").count(), 1, "{programmes:?}");
    assert_eq!(household[0]["memberIds"], household_before[0]["memberIds"], "other fields kept");
    assert_eq!(
        journey.sms_to(&phone),
        ["You are enrolled in maternal support: 40 USD every month until 2027-04-15, paid to your mobile-money wallet."]
    );
    journey.advance(chrono::Duration::minutes(59));
    assert!(journey.sandbox.disbursements().is_empty(), "never before the payment date");

    let months = [
        ("2027-01-31T09:00:00Z", "2027-01", "2027-02-28"),
        ("2027-02-28T09:00:00Z", "2027-02", "2027-03-31"),
        ("2027-03-31T09:00:00Z", "2027-03", "2027-04-30"),
    ];
    for (i, (date, month, next)) in months.iter().copied().enumerate() {
        let n = i as u64 + 1;
        let at = chrono::DateTime::parse_from_rfc3339(date).unwrap();
        journey.advance_to(&(at - chrono::Duration::minutes(1)).to_rfc3339());
        assert_eq!(journey.sandbox.disbursements().len(), i, "month {month}: nothing a minute early");
        journey.advance_to(date);
        let benefit = paid(&journey, key, n).await;
        assert_eq!(benefit["nextPaymentDate"], next, "{benefit}");
        if i + 1 < months.len() {
            assert_eq!(benefit["status"], "active", "{benefit}");
        }
        assert_eq!(number(&benefit["totalPaid"]), 40.0 * n as f64);
        let by_account = journey.paid_once();
        assert_eq!(by_account.len(), 1, "{by_account:#?}");
        let payments = &by_account[&phone];
        assert_eq!(payments.len(), i + 1, "exactly one payment in {month}: {payments:#?}");
        let payment = payments.last().unwrap();
        assert_eq!(
            (payment.payee_key.as_str(), payment.payee_value.as_str()),
            ("nationalId", mother.national_id.as_str())
        );
        assert_eq!((payment.amount, payment.currency.as_str()), (40.0, "USD"));
        assert_eq!(payment.description.as_deref(), Some(format!("Maternal support {month}").as_str()));
        assert_eq!(benefit["lastPayment"]["batchId"], payment.batch_id.as_str());
        if n < 3 {
            let status = status_through_the_api(&journey, key).await;
            assert_eq!(status["paymentsMade"], n, "{status}");
            assert_eq!(status["nextPaymentDate"], next, "{status}");
            assert_eq!(status["lastPayment"]["date"], &date[..10]);
            assert_eq!(status["lastPayment"]["status"], "paid");
        }
    }

    let stored = journey.ended(key).await;
    assert_eq!(
        journey.end_events(key),
        [
            "Event_PaymentDateReached",
            "Event_Paid",
            "Event_PaymentDateReached",
            "Event_Paid",
            "Event_PaymentDateReached",
            "Event_Paid",
            "Event_BenefitEnded"
        ]
    );
    let variables = journey.variables(key);
    let benefit = &variables["benefit"];
    assert_eq!(benefit["status"], "ended", "{benefit}");
    assert_eq!((benefit["paymentsMade"].as_u64(), benefit["paymentsFailed"].as_u64()), (Some(3), Some(0)));
    assert_eq!((benefit["month"].as_u64(), number(&benefit["totalPaid"])), (Some(3), 120.0));
    assert_eq!(variables["monthlyPayment"]["status"], "COMPLETED");
    assert!(stored.state.timers.is_empty());
    let household = journey.records("social-registry", "nationalId", &mother.national_id);
    let support = &household[0]["maternalSupport"];
    assert_eq!(support["status"], "ended", "{support}");
    assert_eq!((support["paymentsMade"].as_u64(), support["ended"].as_str()), (Some(3), Some("2027-03-31")));
    assert!(!household[0]["programmes"].as_array().unwrap().iter().any(|p| p == "maternal-support"));

    let sms = journey.sms_to(&phone);
    assert_eq!(
        sms[1..],
        [
            "Maternal support of 40 USD was paid to your wallet. Next payment: 2027-02-28.",
            "Maternal support of 40 USD was paid to your wallet. Next payment: 2027-03-31.",
            "Maternal support of 40 USD was paid to your wallet. This was the last payment.",
            "Maternal support for Asha has ended: 3 payments, 120 USD in total.",
        ]
    );
    // Nothing more happens, however long the clock runs.
    journey.advance(chrono::Duration::days(90));
    assert_eq!(journey.sandbox.disbursements().len(), 3);
    assert_eq!(journey.n_incidents(), 0);
    assert_eq!(journey.verify_all(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_benefit_stopped_message_stops_the_payments_and_records_why() {
    let journey = Journey::start("2027-01-04T10:00:00Z", Route::Direct).await;
    let mother = new_mother(&journey);
    let phone = mother.phone.clone().unwrap();
    let (certificate, variables) = office_application(&mother, "Tumaini", "2026-12-20");
    let key = journey.start_instance("maternity-benefit", variables).await;
    // The first payment date is the enrolment day, already past 09:00: paid at once.
    let benefit = paid(&journey, key, 1).await;
    assert_eq!(benefit["nextPaymentDate"], "2027-02-04");
    journey.timer(key, "Event_NextPaymentDate").await;
    // She had no household in the social registry (enrolled as a new one) and no wallet in the account
    // mapper (registered, and paid there).
    assert!(journey.var(key, "household").is_null());
    let household = journey.records("social-registry", "nationalId", &mother.national_id);
    assert_eq!(household.len(), 1, "{household:#?}");
    assert_eq!(household[0]["programmes"], json!(["maternal-support"]));
    let mapped = journey.sandbox.beneficiaries();
    let wallet = mapped.iter().find(|b| b["payeeIdentity"] == mother.national_id.as_str()).unwrap();
    assert_eq!(
        (wallet["paymentModality"].as_str(), wallet["financialAddress"].as_str()),
        (Some("01"), Some(phone.as_str()))
    );
    assert_eq!(wallet["registeringInstitutionId"], "MINSOC");

    journey.advance(chrono::Duration::days(10));
    let published = journey
        .api(
            Method::POST,
            "/api/v1/messages",
            Some(json!({"name": "benefitStopped", "correlationKey": certificate,
                        "variables": {"stopReason": "the death of the child was registered"}})),
            200,
        )
        .await;
    assert_eq!(published["correlated"], json!([key.0]), "{published}");

    journey.ended(key).await;
    assert_eq!(
        journey.end_events(key),
        ["Event_PaymentDateReached", "Event_Paid", "Event_StopRecorded", "Event_Stopped"]
    );
    assert!(journey.stored(key).state.timers.is_empty(), "the wait for the next payment is cancelled");
    assert_eq!(journey.var(key, "stopReason"), "the death of the child was registered");
    // Her status through the API, as a third-party app shows it: stopped, when and why.
    let benefit = status_through_the_api(&journey, key).await;
    assert_eq!(
        (benefit["status"].as_str(), benefit["stoppedOn"].as_str(), benefit["stopReason"].as_str()),
        (Some("stopped"), Some("2027-01-14"), Some("the death of the child was registered")),
        "{benefit}"
    );
    let household = journey.records("social-registry", "nationalId", &mother.national_id);
    let support = &household[0]["maternalSupport"];
    assert_eq!(
        (support["status"].as_str(), support["reason"].as_str(), support["ended"].as_str()),
        (Some("stopped"), Some("the death of the child was registered"), Some("2027-01-14")),
        "{support}"
    );
    assert_eq!((support["paymentsMade"].as_u64(), number(&support["totalPaid"])), (Some(1), 40.0));
    assert_eq!(
        (household[0]["programmes"].clone(), household[0]["enrolled"].as_bool()),
        (json!([]), Some(false))
    );
    assert_eq!(
        journey.sms_to(&phone).last().map(String::as_str),
        Some(
            "Maternal support has stopped: the death of the child was registered. Please contact a \
             social-protection office with any question."
        )
    );
    assert_eq!(journey.sms_to(&phone).len(), 3, "enrolled, paid, stopped");

    // The payment dates come and go: no more payments.
    journey.advance(chrono::Duration::days(62));
    let by_account = journey.paid_once();
    assert_eq!(by_account.values().flatten().count(), 1, "{by_account:#?}");
    assert_eq!(by_account[&phone][0].description.as_deref(), Some("Maternal support 2027-01"));
    assert_eq!(journey.n_incidents(), 0);
    assert_eq!(journey.verify_all(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payments_bb_that_is_down_is_retried_then_an_operator_resolves_the_incident_and_she_is_paid_once() {
    let journey = Journey::start("2027-01-04T08:00:00Z", Route::Direct).await;
    let mother = journey.seed().verified_mother().clone();
    let phone = mother.phone.clone().unwrap();
    let (_, variables) = office_application(&mother, "Upendo", "2026-12-20");
    let key = journey.start_instance("maternity-benefit", variables).await;
    journey.timer(key, "Event_NextPaymentDate").await;

    journey.sandbox.set_fault(Service::Payments, Fault { down: true, ..Fault::default() });
    journey.advance(chrono::Duration::hours(1));
    let incident = journey.incident(key).await;
    assert_eq!(incident.element, "Activity_Disburse");
    assert!(incident.message.contains("503"), "{}", incident.message);
    // Five attempts (retries="5"), 30 s apart and doubling (retryBackoffPolicy exponential), then none.
    let failures: Vec<_> = journey
        .events(key)
        .into_iter()
        .filter_map(|event| match event {
            Event::JobFailed { retries, retry_at, .. } => Some((retries, retry_at)),
            _ => None,
        })
        .collect();
    let now = journey.now();
    let waits: Vec<(u32, Option<i64>)> =
        failures.iter().map(|(retries, at)| (*retries, at.map(|at| (at - now).num_seconds()))).collect();
    assert_eq!(waits, [(4, Some(30)), (3, Some(60)), (2, Some(120)), (1, Some(240)), (0, None)]);
    assert!(journey.sandbox.disbursements().is_empty());
    assert_eq!(journey.sms_to(&phone).len(), 1, "only the enrolment SMS");

    // The operator sees the incident through the API, waits for the BB to come back, and retries.
    let listed = journey.api(Method::GET, &format!("/api/v1/incidents?instance={key}"), None, 200).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["element"], "Activity_Disburse");
    let id = items[0]["id"].as_str().unwrap().to_owned();
    journey.sandbox.clear_faults();
    journey.api(Method::POST, &format!("/api/v1/incidents/{id}/resolve"), Some(json!({})), 204).await;

    let benefit = paid(&journey, key, 1).await;
    assert_eq!(benefit["lastPayment"]["status"], "paid");
    assert_eq!(journey.n_incidents(), 0);
    let job = journey
        .events(key)
        .into_iter()
        .find_map(|event| match event {
            Event::JobCreated { job, element, .. } if element.0 == "Activity_Disburse" => Some(job),
            _ => None,
        })
        .unwrap();
    let by_account = journey.paid_once();
    let payments = &by_account[&phone];
    assert_eq!(payments.len(), 1, "paid exactly once: {payments:#?}");
    assert_eq!(payments[0].request_id, idempotency_key(key, job), "the same job, the same request id");
    assert_eq!(by_account.values().flatten().count(), 1);
    assert_eq!(
        journey
            .events(key)
            .iter()
            .filter(
                |event| matches!(event, Event::JobCreated { element, .. } if element.0 == "Activity_Disburse")
            )
            .count(),
        1,
        "one job, retried"
    );
    assert_eq!(
        journey.sms_to(&phone)[1..],
        ["Maternal support of 40 USD was paid to your wallet. Next payment: 2027-02-04."]
    );
    let resolved_by = journey
        .engine
        .store()
        .records(key, 1, usize::MAX)
        .unwrap()
        .into_iter()
        .find(|r| matches!(r.event, Event::JobRetriesUpdated { .. }))
        .expect("the incident was resolved");
    assert_eq!(resolved_by.actor.user, "operator-1");
    assert_eq!(journey.verify_all(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mother_whose_identity_is_not_verified_is_told_and_not_enrolled() {
    let journey = Journey::start("2027-01-04T10:00:00Z", Route::Direct).await;
    let deceased = journey.seed().deceased_person().clone();
    let mut mother = deceased.clone();
    mother.phone = Some("+99971110003".to_owned());
    let (_, variables) = office_application(&mother, "Neema", "2026-12-20");
    let key = journey.start_instance("maternity-benefit", variables).await;
    journey.ended(key).await;
    assert_eq!(journey.end_events(key), ["Event_NotVerified"]);
    assert!(journey.var(key, "benefit").is_null() && journey.var(key, "wallet").is_null());
    assert!(journey.var(key, "rejectionNotice")["requestUid"].is_string());
    assert_eq!(
        journey.sms_to("+99971110003"),
        [
            "We could not verify your national ID, so you were not enrolled in maternal support. Please visit a \
             social-protection office with your ID documents."
        ]
    );
    assert_eq!(journey.sandbox.messages().len(), 1);
    let household = journey.records("social-registry", "nationalId", &deceased.national_id);
    assert!(household.iter().all(|h| h.get("maternalSupport").is_none()), "{household:#?}");
    assert!(!journey
        .sandbox
        .beneficiaries()
        .iter()
        .any(|b| b["payeeIdentity"] == deceased.national_id.as_str()
            && b["registeringInstitutionId"] == "MINSOC"));
    assert!(journey.paid_once().is_empty());
    assert!(journey.open_timers(key).is_empty());
    assert_eq!(journey.verify_all(), 1);
}

/// The stop arrives while this month's payment is in flight: the Payments BB has accepted (and, in the
/// sandbox, settled) the transfer, and its callback has not come yet. Whatever the journey does with the
/// payment job, the money is gone, so what the benefit and the social registry record as paid must
/// include it.
///
/// The stop is only awaited between payments (the interrupting event sub-process of
/// `SubProcess_UntilPaymentDate`): published with a time to live, it is buffered while the payment is in
/// flight, then correlated when the next wait opens, after *Record the payment*. (It once interrupted the
/// whole benefit, payment job included, and the month's money was missing from both totals.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_a_payment_is_in_flight_still_records_the_money_paid() {
    // Callbacks held back: the payment stays in flight for as long as the test needs.
    let journey = Journey::start("2027-01-04T08:00:00Z", Route::Direct).await;
    journey.sandbox.hold_callbacks(true);
    let mother = journey.seed().verified_mother().clone();
    let (certificate, variables) = office_application(&mother, "Baraka", "2026-12-20");
    let key = journey.start_instance("maternity-benefit", variables).await;
    journey.timer(key, "Event_NextPaymentDate").await;
    journey.advance(chrono::Duration::hours(1));
    journey
        .until("the Payments BB has paid and the job waits for its callback", || {
            let in_flight =
                journey.stored(key).state.jobs.values().any(|job| job.element.0 == "Activity_Disburse");
            (in_flight && journey.sandbox.disbursements().len() == 1).then_some(())
        })
        .await;

    let published = journey
        .engine
        .publish(
            govflow_engine::engine::Message {
                name: "benefitStopped".to_owned(),
                correlation_key: certificate,
                variables: support::vars(json!({"stopReason": "the death of the child was registered"})),
                ttl: chrono::Duration::days(1),
                ..Default::default()
            },
            &govflow_engine::audit::Actor::user("civil-registry", None),
        )
        .unwrap();
    assert!(
        journey.stored(key).state.jobs.values().any(|job| job.element.0 == "Activity_Disburse"),
        "the payment is still in flight: the stop waits"
    );
    assert!(published.correlated.is_empty() && published.buffered.is_some(), "{published:?}");
    journey.sandbox.hold_callbacks(false);
    journey.ended(key).await;
    assert_eq!(
        journey.end_events(key),
        ["Event_PaymentDateReached", "Event_Paid", "Event_StopRecorded", "Event_Stopped"]
    );
    let paid: f64 = journey.paid_once().values().flatten().map(|d| d.amount).sum();
    assert_eq!(paid, 40.0, "the BB paid this month");
    let benefit = journey.var(key, "benefit");
    let household = journey.records("social-registry", "nationalId", &mother.national_id);
    let support = &household[0]["maternalSupport"];
    assert_eq!(
        (number(&benefit["totalPaid"]), number(&support["totalPaid"])),
        (paid, paid),
        "the money paid is missing from the benefit's totals: benefit {benefit}, registry {support}"
    );
    assert_eq!(journey.verify_all(), 1);
}

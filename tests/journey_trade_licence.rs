//! The trade licence journey (`processes/trade-licence.bpmn`, the Bangalore restaurant case) end to end,
//! the test acting as the inspector, the owner and the licensing supervisor through the engine shell: fee
//! collected, inspection passed, licence record and download link sent; a failed inspection rectified
//! and resubmitted (and one withdrawn instead); and the stipulated time passing, which opens the overdue
//! path beside the processing, which carries on to the licence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use govflow_connectors::sandbox::Person;
use govflow_engine::runtime::{Event, InstanceKey};
use serde_json::{json, Value};
use support::{person_json, Journey, Route};

const NOW: &str = "2025-07-14T09:00:00Z";
const PORTAL: &str = "https://services.govland.example";

/// A living adult with a phone who holds a seeded licence: the restaurant's owner.
fn owner(journey: &Journey) -> Person {
    let seed = journey.seed();
    seed.licences()
        .iter()
        .filter_map(|licence| seed.person(&licence.holder_national_id))
        .find(|person| !person.deceased && person.phone.is_some())
        .expect("a licence holder with a phone")
        .clone()
}

fn application(owner: &Person, application_id: &str) -> Value {
    json!({
        "applicationId": application_id,
        "applicant": person_json(owner),
        "business": {"name": "Udupi Upahar", "activity": "food service", "address": "12 MG Road",
                     "district": owner.district},
    })
}

async fn apply(journey: &Journey, owner: &Person, application_id: &str) -> InstanceKey {
    let key = journey.start_instance("trade-licence", application(owner, application_id)).await;
    journey.task(key, "Activity_Inspect").await;
    key
}

/// Checks the fee: collected once into the municipality's account, recorded as `feePayment`.
fn check_fee(journey: &Journey, key: InstanceKey, application_id: &str) -> String {
    let by_account = journey.paid_once();
    assert_eq!(by_account.len(), 1, "{by_account:#?}");
    let fees = &by_account["MUNI-TRADE-LICENCE-FEES"];
    assert_eq!(fees.len(), 1, "the fee is collected once: {fees:#?}");
    assert_eq!(
        (fees[0].payee_key.as_str(), fees[0].amount, fees[0].currency.as_str()),
        ("accountNumber", 250.0, "USD")
    );
    assert_eq!(fees[0].description.as_deref(), Some(format!("Trade licence fee {application_id}").as_str()));
    let fee = journey.var(key, "feePayment");
    assert_eq!(fee["status"], "COMPLETED", "{fee}");
    assert_eq!(fee["batchId"], fees[0].batch_id.as_str());
    fees[0].batch_id.clone()
}

/// Checks the licence record and the SMS with its download link; returns the record.
fn check_licence(
    journey: &Journey,
    key: InstanceKey,
    owner: &Person,
    application_id: &str,
    issued: &str,
    rounds: u64,
) -> Value {
    let number = format!("TL-{application_id}");
    let records = journey.records("licences", "ID", &number);
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = records[0].clone();
    assert_eq!(record["holderNationalId"], owner.national_id.as_str());
    assert_eq!(record["holderName"], format!("{} {}", owner.first_name, owner.last_name));
    assert_eq!(
        (record["businessName"].as_str(), record["activity"].as_str()),
        (Some("Udupi Upahar"), Some("food service"))
    );
    assert_eq!((record["issueDate"].as_str(), record["status"].as_str()), (Some(issued), Some("active")));
    assert_eq!(record["inspectionRounds"], rounds);
    assert_eq!(record["feeBatchId"], journey.var(key, "feePayment")["batchId"]);
    assert_eq!(journey.var(key, "licence")["ID"], number.as_str());
    let url = format!("{PORTAL}/licences/{number}/certificate");
    assert_eq!(journey.var(key, "licenceUrl"), url.as_str());
    let expiry = record["expiryDate"].as_str().unwrap().to_owned();
    assert_eq!(
        journey.sms_to(owner.phone.as_deref().unwrap()).last().map(String::as_str),
        Some(format!("Your trade licence {number} for Udupi Upahar is issued, valid until {expiry}. Download it at {url}").as_str())
    );
    record
}

fn inspection_sms(day: &str) -> String {
    format!("The inspection of Udupi Upahar for your trade licence is scheduled on {day}.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restaurant_pays_the_fee_passes_the_inspection_and_gets_its_licence_and_download_link() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let owner = owner(&journey);
    let phone = owner.phone.clone().unwrap();
    let key = apply(&journey, &owner, "APP-2025-0042").await;

    let terms = journey.var(key, "terms");
    assert_eq!(
        terms,
        json!({"fee": 250, "currency": "USD", "serviceLevel": "P7D", "appliedOn": "2025-07-14",
               "licenceNumber": "TL-APP-2025-0042", "portalUrl": PORTAL})
    );
    check_fee(&journey, key, "APP-2025-0042");
    assert_eq!(journey.var(key, "schedule"), json!({"day": "2025-07-16", "round": 1}));
    assert_eq!(journey.sms_to(&phone), [inspection_sms("2025-07-16")]);
    let task = journey.stored(key).state.user_tasks.values().next().cloned().unwrap();
    assert_eq!(task.candidate_groups, ["inspectors"]);
    let (timer, due) = journey.open_timers(key).into_iter().next().expect("the SLA timer is set");
    assert_eq!(
        (timer.as_str(), due.to_rfc3339().as_str()),
        ("Event_ServiceLevelPassed", "2025-07-21T09:00:00+00:00")
    );

    journey.advance(chrono::Duration::days(2));
    journey
        .complete_task(
            key,
            "Activity_Inspect",
            "inspector-7",
            json!({"passed": true, "findings": "kitchen and storage clean"}),
        )
        .await;
    journey.ended(key).await;
    assert_eq!(journey.end_events(key), ["Event_InspectionPassed", "Event_LicenceIssued"]);
    assert_eq!(
        journey.var(key, "inspection"),
        json!({"passed": true, "findings": "kitchen and storage clean", "round": 1, "inspectedOn": "2025-07-16"})
    );
    let record = check_licence(&journey, key, &owner, "APP-2025-0042", "2025-07-16", 1);
    assert_eq!(record["expiryDate"], "2026-07-16");
    assert!(journey.var(key, "licenceNotice")["requestUid"].is_string());
    assert_eq!(journey.sms_to(&phone).len(), 2, "inspection date, licence");

    // Decided in time: the SLA timer went with the stage, and a week later nothing happens.
    assert!(journey.open_timers(key).is_empty());
    journey.advance(chrono::Duration::days(7));
    assert!(journey.var(key, "overdue").is_null());
    assert_eq!(journey.n_completed(key, "Activity_MarkOverdue"), 0);
    assert_eq!(journey.sandbox.messages().len(), 2);
    assert_eq!(journey.sandbox.registry("licences").len(), journey.seed().licences().len() + 1);
    assert_eq!(journey.verify_all(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_inspection_is_rectified_and_resubmitted_and_the_second_round_passes() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let owner = owner(&journey);
    let phone = owner.phone.clone().unwrap();
    let key = apply(&journey, &owner, "APP-2025-0043").await;

    journey.advance(chrono::Duration::days(2));
    journey
        .complete_task(
            key,
            "Activity_Inspect",
            "inspector-7",
            json!({"passed": false, "findings": "no fire extinguisher in the kitchen"}),
        )
        .await;
    // The owner is told and gets the task, assigned to them by national id.
    let task = journey.task(key, "Activity_Rectify").await;
    assert_eq!(
        journey.stored(key).state.user_tasks[&task].assignee.as_deref(),
        Some(owner.national_id.as_str())
    );
    assert_eq!(
        journey.sms_to(&phone).last().map(String::as_str),
        Some("Udupi Upahar did not pass the inspection: no fire extinguisher in the kitchen. Please rectify and resubmit your application.")
    );
    journey.advance(chrono::Duration::days(1));
    journey
        .complete_task(
            key,
            "Activity_Rectify",
            &owner.national_id,
            json!({"resubmit": true, "notes": "extinguisher installed"}),
        )
        .await;

    // A second round is scheduled two days on, and passes.
    journey.task(key, "Activity_Inspect").await;
    assert_eq!(journey.var(key, "schedule"), json!({"day": "2025-07-19", "round": 2}));
    assert_eq!(
        journey.var(key, "rectification"),
        json!({"resubmitted": true, "notes": "extinguisher installed", "on": "2025-07-17"})
    );
    journey.advance(chrono::Duration::days(2));
    journey.complete_task(key, "Activity_Inspect", "inspector-7", json!({"passed": true})).await;
    journey.ended(key).await;
    assert_eq!(journey.end_events(key), ["Event_InspectionPassed", "Event_LicenceIssued"]);
    assert_eq!(journey.n_completed(key, "Activity_Inspect"), 2);
    assert_eq!(journey.n_completed(key, "Activity_Rectify"), 1);
    let inspection = journey.var(key, "inspection");
    assert_eq!((inspection["passed"].as_bool(), inspection["round"].as_u64()), (Some(true), Some(2)));
    check_licence(&journey, key, &owner, "APP-2025-0043", "2025-07-19", 2);
    check_fee(&journey, key, "APP-2025-0043");
    assert_eq!(
        journey.sms_to(&phone)[..3],
        [
            inspection_sms("2025-07-16"),
            "Udupi Upahar did not pass the inspection: no fire extinguisher in the kitchen. Please rectify and resubmit your application.".to_owned(),
            inspection_sms("2025-07-19"),
        ]
    );
    assert_eq!(journey.sms_to(&phone).len(), 4);
    assert_eq!(journey.n_completed(key, "Activity_MarkOverdue"), 0, "decided within the seven days");
    assert_eq!(journey.verify_all(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_who_does_not_resubmit_withdraws_and_no_licence_is_issued() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let owner = owner(&journey);
    let key = apply(&journey, &owner, "APP-2025-0044").await;
    journey.advance(chrono::Duration::days(2));
    journey
        .complete_task(
            key,
            "Activity_Inspect",
            "inspector-7",
            json!({"passed": false, "findings": "no hand-washing station"}),
        )
        .await;
    journey.complete_task(key, "Activity_Rectify", &owner.national_id, json!({"resubmit": false})).await;
    journey.ended(key).await;
    assert_eq!(journey.end_events(key), ["Event_Withdrawn", "Event_NotIssued"]);
    assert_eq!(journey.var(key, "rectification")["resubmitted"], false);
    assert!(journey.var(key, "licence").is_null());
    assert!(journey.records("licences", "ID", "TL-APP-2025-0044").is_empty());
    assert_eq!(journey.sandbox.registry("licences").len(), journey.seed().licences().len());
    check_fee(&journey, key, "APP-2025-0044");
    assert_eq!(journey.sms_to(owner.phone.as_deref().unwrap()).len(), 2, "inspection date, findings");
    assert!(journey.open_timers(key).is_empty());
    assert_eq!(journey.verify_all(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stipulated_time_passing_opens_the_overdue_path_while_the_processing_carries_on() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let owner = owner(&journey);
    let phone = owner.phone.clone().unwrap();
    let key = apply(&journey, &owner, "APP-2025-0045").await;

    // The inspector does not come; a second before seven days nothing has happened.
    journey.advance(chrono::Duration::days(7) - chrono::Duration::seconds(1));
    assert!(journey.var(key, "overdue").is_null());
    journey.advance(chrono::Duration::seconds(1));
    journey.task(key, "Activity_HandleOverdue").await;
    let overdue = journey.var(key, "overdue");
    assert_eq!(overdue["serviceLevel"], "P7D");
    assert!(
        overdue["since"].as_str().is_some_and(|since| since.starts_with("2025-07-21T09:00:00")),
        "{overdue}"
    );
    let stored = journey.stored(key);
    let mut open: Vec<(String, Vec<String>)> =
        stored.state.user_tasks.values().map(|t| (t.element.0.clone(), t.candidate_groups.clone())).collect();
    open.sort();
    assert_eq!(
        open,
        [
            ("Activity_HandleOverdue".to_owned(), vec!["licensing-supervisors".to_owned()]),
            ("Activity_Inspect".to_owned(), vec!["inspectors".to_owned()]),
        ],
        "the processing goes on beside the overdue path"
    );
    assert!(stored.state.timers.is_empty(), "a duration fires once");
    assert_eq!(
        journey.sms_to(&phone).last().map(String::as_str),
        Some(
            "Your trade licence application APP-2025-0045 has passed its stipulated time of P7D. It has been \
             escalated to a licensing supervisor; you may also file a complaint quoting APP-2025-0045."
        )
    );

    // The inspection still happens and the licence is issued, while the supervisor's task stays open.
    journey.advance(chrono::Duration::days(1));
    journey.complete_task(key, "Activity_Inspect", "inspector-7", json!({"passed": true})).await;
    journey
        .until("the licence is sent", || (journey.n_completed(key, "Event_LicenceIssued") == 1).then_some(()))
        .await;
    check_licence(&journey, key, &owner, "APP-2025-0045", "2025-07-22", 1);
    assert!(journey.stored(key).state.is_active());
    assert_eq!(journey.open_tasks(key), ["Activity_HandleOverdue"]);

    journey
        .complete_task(
            key,
            "Activity_HandleOverdue",
            "supervisor-3",
            json!({"action": "inspector reassigned; owner called"}),
        )
        .await;
    journey.ended(key).await;
    let mut ends = journey.end_events(key);
    ends.sort();
    assert_eq!(ends, ["Event_DelayEscalated", "Event_InspectionPassed", "Event_LicenceIssued"]);
    assert_eq!(
        journey.var(key, "escalation"),
        json!({"action": "inspector reassigned; owner called", "by": "supervisor", "on": "2025-07-22"})
    );
    let fired = journey.events(key).iter().filter(|event| matches!(event, Event::TimerFired { .. })).count();
    assert_eq!(fired, 1);
    check_fee(&journey, key, "APP-2025-0045");
    assert_eq!(journey.sms_to(&phone).len(), 3, "inspection date, overdue, licence");
    assert_eq!(journey.verify_all(), 1);
}

//! The birth registration journey (`processes/birth-registration.bpmn`) end to end, driven through the
//! HTTP API as a parent's portal, a health facility, registrars and supervisors would: the happy path
//! (record with the FEEL certificate number, an SMS to each parent, the maternity benefit started by the
//! `birthRegistered` message), parents whose identity is not verified, a birth already registered, a late
//! registration that waits for a registrar and, after its 3-day SLA, for a supervisor (or is refused), the
//! same late birth applied for twice (registered once, the other "registered meanwhile"), and the 30-day
//! boundary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use govflow_connectors::sandbox::Person;
use govflow_engine::runtime::{Event, InstanceKey};
use govflow_engine::store::Store;
use serde_json::{json, Value};
use support::{person_json, Journey, Method, Route, REGISTRAR_TOKEN, SUPERVISOR_TOKEN};

const NOW: &str = "2025-07-10T10:00:00Z";

/// A living man with a phone who is not `mother`: the father named in the applications.
fn a_father(journey: &Journey, mother: &Person) -> Person {
    journey
        .seed()
        .persons()
        .iter()
        .find(|p| {
            p.gender == "male"
                && !p.deceased
                && p.phone.is_some()
                && (20..=60).contains(&p.age())
                && p.national_id != mother.national_id
        })
        .expect("the seed has a living adult man with a phone")
        .clone()
}

fn child(first_name: &str, last_name: &str, birth_date: &str) -> Value {
    json!({"firstName": first_name, "lastName": last_name, "birthDate": birth_date, "gender": "female",
           "placeOfBirth": "Lakeside District Hospital"})
}

/// Starts a birth registration through the API (a parent's application); returns the instance.
async fn apply(journey: &Journey, variables: Value) -> InstanceKey {
    let started = journey
        .api(
            Method::POST,
            "/api/v1/instances",
            Some(json!({"processId": "birth-registration", "variables": variables})),
            201,
        )
        .await;
    assert_eq!(started["state"], "active", "{started}");
    InstanceKey(started["instance"].as_u64().unwrap())
}

/// The instance as the API shows it, once it has ended.
async fn ended_view(journey: &Journey, key: InstanceKey) -> Value {
    journey.ended(key).await;
    let view = journey.api(Method::GET, &format!("/api/v1/instances/{key}"), None, 200).await;
    assert_eq!(view["state"], "completed", "{view}");
    view
}

/// The open user tasks of a candidate group, as the API lists them.
async fn tasks_of(journey: &Journey, group: &str) -> Vec<Value> {
    let page = journey
        .api(
            Method::GET,
            &format!("/api/v1/user-tasks?candidateGroup={group}&processId=birth-registration"),
            None,
            200,
        )
        .await;
    page["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parents_application_registers_the_birth_tells_both_parents_and_starts_the_maternity_benefit() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let mother = journey.seed().verified_mother().clone();
    let father = a_father(&journey, &mother);
    let key = apply(
        &journey,
        json!({"child": child("Amani", &mother.last_name, "2025-07-01"),
               "mother": person_json(&mother), "father": person_json(&father)}),
    )
    .await;

    let view = ended_view(&journey, key).await;
    assert_eq!(journey.end_events(key).last().map(String::as_str), Some("Event_BirthRegistered"));
    let certificate = format!("BC-20250701-{}-AMANI", mother.national_id);
    let variables = &view["variables"];
    assert_eq!(variables["alreadyRegistered"], false);
    assert_eq!(variables["motherIdentity"]["verified"], true);
    assert_eq!(variables["motherIdentity"]["individual_id"], mother.national_id.as_str());
    assert_eq!(variables["fatherIdentity"]["individual_id"], father.national_id.as_str());
    assert!(variables.get("lateReview").is_none_or(Value::is_null), "on time: no review {variables}");
    let record = &variables["birthRecord"];
    assert_eq!(record["certificateNumber"], certificate.as_str(), "{record}");
    assert_eq!(record["ID"], certificate.as_str(), "the certificate number is the record's ID: {record}");
    assert_eq!(record["motherId"], mother.national_id.as_str());
    assert_eq!(record["fatherId"], father.national_id.as_str());
    assert_eq!(record["registrationDate"], "2025-07-10");
    assert_eq!(record["lateRegistration"], false);
    assert!(variables["registrationNotice"]["requestUid"].is_string(), "{variables}");

    // The civil register holds exactly this one new record.
    let records = journey.records("civil-register", "motherId", &mother.national_id);
    let new: Vec<&Value> =
        records.iter().filter(|r| r["certificateNumber"] == certificate.as_str()).collect();
    assert_eq!(new.len(), 1, "{records:#?}");
    assert_eq!(new[0]["childFirstName"], "Amani");
    assert_eq!(new[0]["birthDate"], "2025-07-01");
    assert_eq!(
        journey.sandbox.registry("civil-register").len(),
        journey.seed().births().len() + 1,
        "one record added"
    );

    // One SMS to each parent, naming the certificate.
    let text =
        format!("The birth of Amani {} is registered. Certificate number: {certificate}.", mother.last_name);
    assert_eq!(journey.sms_to(mother.phone.as_deref().unwrap()).first(), Some(&text));
    assert_eq!(journey.sms_to(father.phone.as_deref().unwrap()), [text]);

    // The message birthRegistered started the maternity benefit, keyed by the certificate number.
    let benefits = journey.instances("maternity-benefit");
    assert_eq!(benefits.len(), 1, "{benefits:?}");
    let benefit = benefits[0].key;
    assert_eq!(benefits[0].business_key.as_deref(), Some(certificate.as_str()));
    match &journey.events(benefit)[0] {
        Event::InstanceCreated { start_event, variables, .. } => {
            assert_eq!(start_event.0, "StartEvent_BirthRegistered");
            assert_eq!(variables["birth"]["certificateNumber"], certificate.as_str());
            assert_eq!(variables["mother"]["nationalId"], mother.national_id.as_str());
        }
        other => panic!("first event {other:?}"),
    }
    // It enrols her and pays the first month at once (the first payment date is the enrolment day).
    journey.timer(benefit, "Event_NextPaymentDate").await;
    let terms = journey
        .until("the first month is paid", || {
            let terms = journey.var(benefit, "benefit");
            (terms["paymentsMade"] == 1 && !journey.open_timers(benefit).is_empty()).then_some(terms)
        })
        .await;
    assert_eq!(terms["nextPaymentDate"], "2025-08-10");
    assert_eq!(terms["endDate"], "2030-07-01");
    let paid = journey.paid_once();
    let all: Vec<_> = paid.values().flatten().collect();
    assert_eq!(all.len(), 1, "only the benefit's first month: {all:#?}");
    assert_eq!((all[0].payee_value.as_str(), all[0].amount), (mother.national_id.as_str(), 40.0));
    assert_eq!(all[0].description.as_deref(), Some("Maternal support 2025-07"));
    assert_eq!(journey.sms_to(mother.phone.as_deref().unwrap()).len(), 3, "registered, enrolled, paid");

    assert_eq!(journey.n_incidents(), 0);
    assert_eq!(journey.verify_all(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_whose_identity_is_not_verified_are_told_and_nothing_is_registered() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let seed = journey.seed().clone();
    let deceased = seed.deceased_person().clone();
    let verified = seed.verified_mother().clone();
    let father = a_father(&journey, &verified);
    let applicant_phone = "+99971110001";

    // A health facility notifies a birth naming a deceased person as the mother (message start).
    let mut deceased_mother = person_json(&deceased);
    deceased_mother["phone"] = json!(applicant_phone);
    let published = journey
        .api(
            Method::POST,
            "/api/v1/messages",
            Some(json!({"name": "birthNotified", "correlationKey": "HF-LAKESIDE-2025-0713",
                        "variables": {"child": child("Zuri", &deceased.last_name, "2025-07-08"),
                                      "mother": deceased_mother, "father": null}})),
            200,
        )
        .await;
    let notified = InstanceKey(published["started"][0].as_u64().expect("the message started a registration"));
    // A parent applies naming a mother no register knows, and a real father.
    let unknown = apply(
        &journey,
        json!({"child": child("Imani", "Okafor", "2025-07-05"),
               "mother": {"nationalId": seed.unknown_national_id(), "firstName": "Ada", "lastName": "Okafor",
                          "phone": "+99971110002"},
               "father": person_json(&father)}),
    )
    .await;

    for key in [notified, unknown] {
        let view = ended_view(&journey, key).await;
        assert_eq!(journey.end_events(key).last().map(String::as_str), Some("Event_RejectedIdentity"));
        let variables = &view["variables"];
        assert!(variables.get("birthRecord").is_none_or(Value::is_null), "{variables}");
        assert!(variables["rejectionNotice"]["requestUid"].is_string(), "{variables}");
        let thrown = journey.events(key).into_iter().find_map(|event| match event {
            Event::JobErrorThrown { error_code, .. } => Some(error_code),
            _ => None,
        });
        assert_eq!(thrown.as_deref(), Some("ID_NOT_VERIFIED"));
        assert!(!reached_create(&journey, key), "no record was attempted");
    }
    assert_eq!(journey.stored(notified).meta.business_key.as_deref(), Some("HF-LAKESIDE-2025-0713"));

    // Everyone named with a phone is told; nothing is written; no benefit starts.
    let rejection = |name: &str| {
        format!(
            "We could not verify a parent's national ID, so the birth of {name} was not registered. \
             Please visit a civil registration office with your ID documents."
        )
    };
    assert_eq!(journey.sms_to(applicant_phone), [rejection("Zuri")]);
    assert_eq!(journey.sms_to("+99971110002"), [rejection("Imani")]);
    assert_eq!(journey.sms_to(father.phone.as_deref().unwrap()), [rejection("Imani")]);
    assert_eq!(journey.sandbox.messages().len(), 3);
    assert_eq!(journey.sandbox.registry("civil-register").len(), seed.births().len());
    assert!(journey.instances("maternity-benefit").is_empty());
    assert!(journey.paid_once().is_empty());
    assert_eq!(journey.n_incidents(), 0);
    assert_eq!(journey.verify_all(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_birth_already_in_the_civil_register_ends_as_a_duplicate_without_a_record_or_sms() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let seed = journey.seed().clone();
    let (mother, birth) = seed.registered_birth();
    let key = apply(
        &journey,
        json!({"child": {"firstName": birth.child_first_name, "lastName": birth.child_last_name,
                         "birthDate": birth.birth_date, "gender": birth.gender,
                         "placeOfBirth": birth.place_of_birth},
               "mother": person_json(mother), "father": null}),
    )
    .await;

    let view = ended_view(&journey, key).await;
    assert_eq!(journey.end_events(key), ["Event_ParentsVerified", "Event_Duplicate"]);
    let variables = &view["variables"];
    assert_eq!(variables["alreadyRegistered"], true);
    assert_eq!(variables["motherIdentity"]["verified"], true);
    assert!(variables.get("birthRecord").is_none_or(Value::is_null));
    assert!(!reached_create(&journey, key));
    let same: Vec<Value> = journey
        .records("civil-register", "motherId", &mother.national_id)
        .into_iter()
        .filter(|r| {
            r["birthDate"] == birth.birth_date.as_str()
                && r["childFirstName"] == birth.child_first_name.as_str()
        })
        .collect();
    assert_eq!(same.len(), 1, "still only the seeded record: {same:#?}");
    assert_eq!(same[0]["certificateNumber"], birth.certificate_number.as_str());
    assert_eq!(journey.sandbox.registry("civil-register").len(), seed.births().len());
    assert!(journey.sandbox.messages().is_empty(), "nobody is told of a duplicate");
    assert!(journey.instances("maternity-benefit").is_empty());
    assert!(journey.paid_once().is_empty());
    assert_eq!(journey.verify_all(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_registration_waits_for_a_registrar_and_after_three_days_a_supervisor_decides() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let mother = journey.seed().verified_mother().clone();
    // 40 days after the birth: late.
    let key = apply(
        &journey,
        json!({"child": child("Baraka", &mother.last_name, "2025-05-31"), "mother": person_json(&mother),
               "father": null}),
    )
    .await;

    // The registrars see it, with its form.
    journey.task(key, "Activity_ReviewLate").await;
    let listed = tasks_of(&journey, "registrars").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["element"], "Activity_ReviewLate");
    assert_eq!(
        listed[0]["dueDate"].as_str().map(|due| due.starts_with("2025-07-13")),
        Some(true),
        "{listed:?}"
    );
    let registrar_task = listed[0]["id"].as_str().unwrap().to_owned();
    let detail = journey.api(Method::GET, &format!("/api/v1/user-tasks/{registrar_task}"), None, 200).await;
    let form = detail["form"]["schema"].to_string();
    assert!(form.contains("\"approved\"") && form.contains("\"remarks\""), "{detail}");
    assert_eq!(detail["variables"]["child"]["firstName"], "Baraka");
    let (status, _) = journey
        .api_as(
            REGISTRAR_TOKEN,
            Method::POST,
            &format!("/api/v1/user-tasks/{registrar_task}/claim"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);

    // Not a second early; then the 3-day SLA passes without a decision.
    journey.advance(chrono::Duration::days(3) - chrono::Duration::seconds(1));
    assert_eq!(journey.open_tasks(key), ["Activity_ReviewLate"]);
    journey.advance(chrono::Duration::seconds(1));
    journey.task(key, "Activity_SupervisorReview").await;
    assert_eq!(journey.open_tasks(key), ["Activity_SupervisorReview"], "the registrar's task was withdrawn");
    assert!(tasks_of(&journey, "registrars").await.is_empty());
    let (status, body) = journey
        .api_as(
            REGISTRAR_TOKEN,
            Method::POST,
            &format!("/api/v1/user-tasks/{registrar_task}/complete"),
            Some(json!({"variables": {"approved": true}})),
        )
        .await;
    assert_eq!(status, 409, "the registrar can no longer decide: {body}");
    assert!(body["message"].as_str().unwrap().contains("no longer open: it was cancelled"), "{body}");

    let supervisors = tasks_of(&journey, "registrar-supervisors").await;
    assert_eq!(supervisors.len(), 1, "{supervisors:?}");
    let supervisor_task = supervisors[0]["id"].as_str().unwrap().to_owned();
    let (status, body) = journey
        .api_as(
            SUPERVISOR_TOKEN,
            Method::POST,
            &format!("/api/v1/user-tasks/{supervisor_task}/complete"),
            Some(json!({"variables": {"approved": true, "remarks": "hospital record checked"}})),
        )
        .await;
    assert_eq!(status, 204, "{body}");

    let view = ended_view(&journey, key).await;
    assert_eq!(journey.end_events(key).last().map(String::as_str), Some("Event_BirthRegistered"));
    let variables = &view["variables"];
    let review = &variables["lateReview"];
    assert_eq!(
        (review["decision"].as_str(), review["reviewedBy"].as_str(), review["remarks"].as_str()),
        (Some("approved"), Some("supervisor"), Some("hospital record checked")),
        "{review}"
    );
    assert!(review["reviewedAt"].as_str().is_some_and(|at| at.starts_with("2025-07-13")), "{review}");
    let certificate = format!("BC-20250531-{}-BARAKA", mother.national_id);
    assert_eq!(variables["birthRecord"]["certificateNumber"], certificate.as_str());
    let records = journey.records("civil-register", "certificateNumber", &certificate);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["lateRegistration"], true);
    assert_eq!(records[0]["registrationDate"], "2025-07-13");
    // Who decided is in the audit trail: the supervisor's token, not the registrar's.
    let records = journey.engine.store().records(key, 1, usize::MAX).unwrap();
    let decided = records
        .iter()
        .find(|r| matches!(r.event, Event::UserTaskCompleted { .. }))
        .expect("a user task was completed");
    assert_eq!(decided.actor.user, "supervisor-1");
    assert_eq!(records.iter().filter(|r| matches!(r.event, Event::UserTaskCompleted { .. })).count(), 1);
    assert_eq!(
        journey.sms_to(mother.phone.as_deref().unwrap()).first().map(String::as_str),
        Some(
            format!(
                "The birth of Baraka {} is registered. Certificate number: {certificate}.",
                mother.last_name
            )
            .as_str()
        )
    );

    // The benefit it started waits for its first payment (it is in the past: paid at once).
    let benefit = journey.instances("maternity-benefit")[0].key;
    journey
        .until("the benefit pays its first month", || {
            (journey.var(benefit, "benefit")["paymentsMade"] == 1).then_some(())
        })
        .await;
    journey.timer(benefit, "Event_NextPaymentDate").await;
    assert_eq!(journey.paid_once().values().flatten().count(), 1);
    assert_eq!(journey.n_incidents(), 0);
    assert_eq!(journey.verify_all(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_refuses_a_late_registration_within_the_sla_and_the_parents_are_told_why() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let mother = journey.seed().verified_mother().clone();
    let key = apply(
        &journey,
        json!({"child": child("Neema", &mother.last_name, "2025-04-01"), "mother": person_json(&mother),
               "father": null}),
    )
    .await;
    journey.task(key, "Activity_ReviewLate").await;
    journey.advance(chrono::Duration::days(1));
    let task = tasks_of(&journey, "registrars").await[0]["id"].as_str().unwrap().to_owned();
    let (status, body) = journey
        .api_as(
            REGISTRAR_TOKEN,
            Method::POST,
            &format!("/api/v1/user-tasks/{task}/complete"),
            Some(json!({"variables": {"approved": false, "remarks": "no proof of birth was provided"}})),
        )
        .await;
    assert_eq!(status, 204, "{body}");

    let view = ended_view(&journey, key).await;
    assert_eq!(journey.end_events(key).last().map(String::as_str), Some("Event_Refused"));
    let review = &view["variables"]["lateReview"];
    assert_eq!(
        (review["decision"].as_str(), review["reviewedBy"].as_str()),
        (Some("refused"), Some("registrar"))
    );
    assert!(view["variables"]["refusalNotice"]["requestUid"].is_string());
    assert_eq!(
        journey.sms_to(mother.phone.as_deref().unwrap()),
        ["The late registration of the birth of Neema was refused: no proof of birth was provided"]
    );
    assert!(journey.records("civil-register", "childFirstName", "Neema").is_empty());
    // The SLA timer went with the task: three more days change nothing.
    assert!(journey.open_timers(key).is_empty());
    journey.advance(chrono::Duration::days(3));
    assert_eq!(journey.n_completed(key, "Activity_SupervisorReview"), 0);
    assert!(journey.instances("maternity-benefit").is_empty());
    assert!(journey.paid_once().is_empty());
    assert_eq!(journey.verify_all(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_late_birth_applied_for_twice_is_registered_once_and_the_second_ends_as_registered_meanwhile(
) {
    let journey = Journey::start(NOW, Route::Direct).await;
    let mother = journey.seed().verified_mother().clone();
    let variables = json!({"child": child("Pendo", &mother.last_name, "2025-05-20"), "mother": person_json(&mother),
                           "father": null});
    // The health facility's notification and the mother's own application, both before any record exists:
    // both pass the duplicate check and wait for a registrar.
    let published = journey
        .api(
            Method::POST,
            "/api/v1/messages",
            Some(json!({"name": "birthNotified", "correlationKey": "HF-LAKESIDE-2025-0520", "variables": variables})),
            200,
        )
        .await;
    let notified = InstanceKey(published["started"][0].as_u64().unwrap());
    let applied = apply(&journey, variables.clone()).await;
    journey.task(notified, "Activity_ReviewLate").await;
    journey.task(applied, "Activity_ReviewLate").await;
    assert_eq!(journey.var(notified, "alreadyRegistered"), false);
    assert_eq!(journey.var(applied, "alreadyRegistered"), false);
    let listed = tasks_of(&journey, "registrars").await;
    assert_eq!(listed.len(), 2, "{listed:?}");

    // Two registrars approve, one after the other.
    for key in [notified, applied] {
        let task = listed.iter().find(|t| t["instance"] == key.0).unwrap()["id"].as_str().unwrap().to_owned();
        let (status, body) = journey
            .api_as(
                REGISTRAR_TOKEN,
                Method::POST,
                &format!("/api/v1/user-tasks/{task}/complete"),
                Some(json!({"variables": {"approved": true}})),
            )
            .await;
        assert_eq!(status, 204, "{body}");
        journey.ended(key).await;
    }
    assert_eq!(journey.end_events(notified).last().map(String::as_str), Some("Event_BirthRegistered"));
    assert_eq!(journey.end_events(applied).last().map(String::as_str), Some("Event_DuplicateConcurrent"));
    let thrown = journey.events(applied).into_iter().find_map(|event| match event {
        Event::JobErrorThrown { error_code, .. } => Some(error_code),
        _ => None,
    });
    assert_eq!(thrown.as_deref(), Some("DUPLICATE_RECORD"));
    assert!(journey.var(applied, "birthRecord").is_null());

    let certificate = format!("BC-20250520-{}-PENDO", mother.national_id);
    assert_eq!(journey.records("civil-register", "certificateNumber", &certificate).len(), 1, "one record");
    assert_eq!(journey.sandbox.registry("civil-register").len(), journey.seed().births().len() + 1);
    // The parents are told once, and one benefit starts.
    let phone = mother.phone.clone().unwrap();
    let registered = journey.sms_to(&phone).into_iter().filter(|sms| sms.contains(&certificate)).count();
    assert_eq!(registered, 1);
    let benefits = journey.instances("maternity-benefit");
    assert_eq!(benefits.len(), 1);
    assert_eq!(benefits[0].business_key.as_deref(), Some(certificate.as_str()));
    journey
        .until("the benefit pays its first month", || {
            (journey.var(benefits[0].key, "benefit")["paymentsMade"] == 1).then_some(())
        })
        .await;
    journey.timer(benefits[0].key, "Event_NextPaymentDate").await;
    assert_eq!(journey.paid_once().values().flatten().count(), 1);
    assert_eq!(journey.n_incidents(), 0);
    assert_eq!(journey.verify_all(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_days_after_the_birth_is_still_on_time_and_thirty_one_is_late() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let mother = journey.seed().verified_mother().clone();
    let on_time = apply(
        &journey,
        json!({"child": child("Furaha", &mother.last_name, "2025-06-10"), "mother": person_json(&mother),
               "father": null}),
    )
    .await;
    let late = apply(
        &journey,
        json!({"child": child("Jabali", &mother.last_name, "2025-06-09"), "mother": person_json(&mother),
               "father": null}),
    )
    .await;
    journey.ended(on_time).await;
    assert_eq!(journey.end_events(on_time).last().map(String::as_str), Some("Event_BirthRegistered"));
    assert_eq!(journey.n_completed(on_time, "Activity_ReviewLate"), 0);
    assert_eq!(journey.var(on_time, "birthRecord")["lateRegistration"], false);
    journey.task(late, "Activity_ReviewLate").await;
    assert_eq!(journey.open_tasks(late), ["Activity_ReviewLate"]);
    assert!(
        journey.records("civil-register", "childFirstName", "Jabali").is_empty(),
        "not before a decision"
    );
    assert_eq!(journey.records("civil-register", "childFirstName", "Furaha").len(), 1);
    let benefit = journey.instances("maternity-benefit")[0].key;
    journey
        .until("the benefit pays its first month", || {
            (journey.var(benefit, "benefit")["paymentsMade"] == 1).then_some(())
        })
        .await;
    journey.timer(benefit, "Event_NextPaymentDate").await;
    assert_eq!(journey.paid_once().values().flatten().count(), 1);
    assert_eq!(journey.verify_all(), 3);
}

/// Whether the instance ever activated the civil register's create task.
fn reached_create(journey: &Journey, key: InstanceKey) -> bool {
    journey.events(key).iter().any(
        |event| matches!(event, Event::ElementActivated { element, .. } if element.0 == "Activity_CreateRecord"),
    )
}

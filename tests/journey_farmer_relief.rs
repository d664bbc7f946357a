//! The emergency farmer relief journey (`processes/farmer-relief.bpmn` with the decision table
//! `farmer-relief-eligibility.dmn`) end to end, its registries and payments reached through the sandbox's
//! Information Mediator: a relief run for a seeded district whose counts and amounts equal what the table
//! gives for the seed data (worked out here from the seed, not from the engine), with vouchers for the
//! farmers without a bank account; a second run for the same disaster, where every credential exists
//! already, so each payment is compensated by exactly one reversal; and a Payments BB that is down during
//! a run, one incident per farmer, each farmer paid once after the operator resolves them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use govflow_connectors::sandbox::{Disbursement, Farmer, Fault, SeedData, Service};
use govflow_engine::audit::Actor;
use govflow_engine::engine::idempotency_key;
use govflow_engine::runtime::{Command, Event, InstanceKey, VariableMap};
use govflow_engine::store::Store;
use serde_json::{json, Value};
use support::{Journey, Route};

const NOW: &str = "2025-07-15T10:00:00Z";
const DISASTER: &str = "FLOOD-2025-07";

/// What the relief should be for one farmer, from the seed data and the decision table of
/// docs/journeys.md (hit policy FIRST), independently of the engine.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    farmer: Farmer,
    eligible: bool,
    amount: f64,
    /// The rule of the table that decided (1 to 6).
    rule: u8,
    /// Whether the household's income and size (rather than the farmer register's) changed the outcome.
    household_decided: bool,
}

fn expected_for(seed: &SeedData, farmer: &Farmer) -> Expected {
    let register = (f64::from(farmer.annual_income), f64::from(farmer.household_size));
    // The household's income and size when the farmer registered one, else the farmer register's.
    let household = seed
        .household_of(&farmer.national_id)
        .map(|household| (f64::from(household.monthly_income) * 12.0, f64::from(household.household_size)));
    let damage = farmer.damage_level.as_str();
    let (eligible, amount, rule) = decide(household.unwrap_or(register), damage);
    let household_decided = household.is_some() && decide(register, damage).1 != amount;
    Expected { farmer: farmer.clone(), eligible, amount, rule, household_decided }
}

/// The decision table of docs/journeys.md, hit policy FIRST: (eligible, amount, rule).
fn decide((income, size): (f64, f64), damage: &str) -> (bool, f64, u8) {
    if damage == "none" {
        (false, 0.0, 1)
    } else if income >= 8000.0 {
        (false, 0.0, 2)
    } else if damage == "severe" && size >= 1.0 {
        (true, (300.0 + 50.0 * size).min(600.0), 3)
    } else if damage == "moderate" && income < 6000.0 && size >= 1.0 {
        (true, (150.0 + 25.0 * size).min(300.0), 4)
    } else if damage == "low" && income < 3000.0 {
        (true, 100.0, 5)
    } else {
        (false, 0.0, 6)
    }
}

/// The district whose farmers exercise the most of the table (then: the most decided by household data)
/// among those whose farmers take every path: paid to a bank account, paid by voucher, refused.
fn district_with_every_path(seed: &SeedData) -> (String, Vec<Expected>) {
    let districts: BTreeSet<&str> = seed.farmers().iter().map(|f| f.district.as_str()).collect();
    let (district, farmers) = districts
        .into_iter()
        .map(|district| {
            let farmers: Vec<Expected> = seed
                .farmers()
                .iter()
                .filter(|f| f.district == district)
                .map(|f| expected_for(seed, f))
                .collect();
            (district.to_owned(), farmers)
        })
        .filter(|(_, farmers)| {
            farmers.iter().any(|e| e.eligible && e.farmer.bank_account.is_some())
                && farmers.iter().any(|e| e.eligible && e.farmer.bank_account.is_none())
                && farmers.iter().any(|e| !e.eligible)
        })
        .max_by_key(|(district, farmers)| {
            let rules: BTreeSet<u8> = farmers.iter().map(|e| e.rule).collect();
            (
                rules.len(),
                farmers.iter().filter(|e| e.household_decided).count(),
                std::cmp::Reverse(district.clone()),
            )
        })
        .expect("the seed has a district with farmers paid by account, by voucher, and refused");
    // The run must mean something: several rules, and a household record that changes an outcome.
    let rules: BTreeSet<u8> = farmers.iter().map(|e| e.rule).collect();
    assert!(rules.len() >= 4, "{district} exercises only rules {rules:?}");
    assert!(farmers.iter().any(|e| e.household_decided), "{district}: household data decide nothing");
    (district, farmers)
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("not a number: {value}"))
}

/// The relief's per-farmer results, by farmer ID.
fn results(journey: &Journey, key: InstanceKey) -> BTreeMap<String, Value> {
    let results = journey.var(key, "results");
    results
        .as_array()
        .unwrap_or_else(|| panic!("results is not a list: {results}"))
        .iter()
        .map(|entry| (entry["farmerId"].as_str().unwrap().to_owned(), entry.clone()))
        .collect()
}

fn voucher_number(farmer: &Farmer) -> String {
    format!("V-{DISASTER}-{}", farmer.id)
}

fn relief_payments(journey: &Journey) -> Vec<Disbursement> {
    journey.paid_once().into_values().flatten().filter(|d| d.payee_key == "nationalId").collect()
}

fn reversals(journey: &Journey) -> Vec<Disbursement> {
    journey.paid_once().into_values().flatten().filter(|d| d.payee_value == "PROG-EMERGENCY-RELIEF").collect()
}

/// Asserts the summary of a run.
fn check_summary(
    summary: &Value,
    district: &str,
    farmers: usize,
    paid: usize,
    refused: usize,
    failed: usize,
    total: f64,
) {
    assert_eq!(summary["disasterId"], DISASTER, "{summary}");
    assert_eq!(summary["district"], district, "{summary}");
    assert_eq!(
        (
            summary["farmers"].as_u64(),
            summary["paid"].as_u64(),
            summary["refused"].as_u64(),
            summary["failed"].as_u64()
        ),
        (Some(farmers as u64), Some(paid as u64), Some(refused as u64), Some(failed as u64)),
        "{summary}"
    );
    assert_eq!(number(&summary["totalPaid"]), total, "{summary}");
    assert_eq!(
        (summary["currency"].as_str(), summary["moreFarmersToList"].as_bool()),
        (Some("USD"), Some(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relief_run_pays_what_the_decision_table_gives_by_account_or_voucher_through_the_mediator() {
    let journey = Journey::start(NOW, Route::Mediator).await;
    let seed = journey.seed().clone();
    let (district, expected) = district_with_every_path(&seed);
    let eligible: Vec<&Expected> = expected.iter().filter(|e| e.eligible).collect();
    let total: f64 = eligible.iter().map(|e| e.amount).sum();

    let key = journey
        .start_instance(
            "farmer-relief",
            json!({"disasterId": DISASTER, "district": district, "damageLevel": "severe"}),
        )
        .await;
    journey.ended(key).await;
    assert_eq!(journey.end_events(key).last().map(String::as_str), Some("Event_RunComplete"));
    assert_eq!(journey.var(key, "nFarmers"), expected.len());
    check_summary(
        &journey.var(key, "summary"),
        &district,
        expected.len(),
        eligible.len(),
        expected.len() - eligible.len(),
        0,
        total,
    );

    // Per farmer: the outcome, the amount and how it was paid.
    let results = results(&journey, key);
    assert_eq!(results.len(), expected.len(), "{results:#?}");
    let payments: BTreeMap<String, Disbursement> =
        relief_payments(&journey).into_iter().map(|d| (d.payee_value.clone(), d)).collect();
    assert_eq!(payments.len(), eligible.len(), "one payment per eligible farmer: {payments:#?}");
    for e in &expected {
        let farmer = &e.farmer;
        let result = &results[&farmer.id];
        assert_eq!(result["nationalId"], farmer.national_id.as_str());
        if !e.eligible {
            assert_eq!(
                (result["outcome"].as_str(), result["reason"].as_str()),
                (Some("refused"), Some("not eligible"))
            );
            assert!(!payments.contains_key(&farmer.national_id), "{} refused but paid", farmer.id);
            continue;
        }
        assert_eq!(result["outcome"], "paid", "{result}");
        assert_eq!(number(&result["amount"]), e.amount, "{} {result}", farmer.id);
        let payment = &payments[&farmer.national_id];
        assert_eq!(payment.amount, e.amount, "{payment:?}");
        assert_eq!(payment.description.as_deref(), Some(format!("Emergency relief {DISASTER}").as_str()));
        assert_eq!(result["paymentBatchId"], payment.batch_id.as_str());
        let credential_id = format!("ERB-{DISASTER}-{}", farmer.id);
        assert_eq!(result["credentialId"], credential_id.as_str());
        let credential = journey.records("relief-credentials", "ID", &credential_id);
        assert_eq!(credential.len(), 1, "{credential_id}");
        let credential = &credential[0];
        assert_eq!(credential["credentialType"], "Emergency Relief Beneficiary");
        assert_eq!(credential["holderNationalId"], farmer.national_id.as_str());
        assert_eq!(number(&credential["amount"]), e.amount);
        assert_eq!(credential["paymentBatchId"], payment.batch_id.as_str());
        assert_eq!(
            (credential["issuedOn"].as_str(), credential["validUntil"].as_str()),
            (Some("2025-07-15"), Some("2026-07-15"))
        );
        match &farmer.bank_account {
            Some(account) => {
                assert_eq!(&payment.financial_address, account, "paid into the bank account");
                assert_eq!(result["paidBy"], "bank account");
                assert!(result["voucherNumber"].is_null(), "{result}");
            }
            None => {
                let voucher = voucher_number(farmer);
                assert_eq!(payment.financial_address, voucher, "paid to the cash-withdrawal voucher");
                assert_eq!(
                    (result["paidBy"].as_str(), result["voucherNumber"].as_str()),
                    (Some("voucher"), Some(voucher.as_str()))
                );
                assert_eq!(credential["voucherNumber"], voucher.as_str());
                let mapped = journey.sandbox.beneficiaries();
                let entry =
                    mapped.iter().find(|b| b["payeeIdentity"] == farmer.national_id.as_str()).unwrap();
                assert_eq!(
                    (entry["paymentModality"].as_str(), entry["financialAddress"].as_str()),
                    (Some("02"), Some(voucher.as_str()))
                );
                assert_eq!(entry["registeringInstitutionId"], "MINAGRI");
            }
        }
    }
    assert_eq!(journey.sandbox.registry("relief-credentials").len(), eligible.len());
    assert!(reversals(&journey).is_empty());
    assert!(journey.sandbox.messages().is_empty(), "the farmer register has no phone numbers");

    // Every registries and payments call went through the mediator, under this run's job keys.
    let log = journey.sandbox.mediator_log();
    let prefix = format!("{key}-");
    for service in ["registries", "payments"] {
        let calls: Vec<_> = log.iter().filter(|entry| entry.service == service).collect();
        assert!(!calls.is_empty(), "no {service} call went through the mediator");
        assert!(
            calls.iter().all(|entry| entry.allowed && entry.x_road_id.starts_with(&prefix)),
            "{calls:#?}"
        );
    }
    // Each payment was requested through the mediator under its job's key, which the BB paid once.
    let mediated: BTreeSet<&str> = log
        .iter()
        .filter(|entry| entry.path.ends_with("/batchtransactions"))
        .map(|entry| entry.x_road_id.as_str())
        .collect();
    let paid: BTreeSet<&str> = payments.values().map(|d| d.request_id.as_str()).collect();
    assert_eq!(mediated, paid);
    assert_eq!(journey.n_incidents(), 0);
    assert_eq!(journey.verify_all(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_for_the_same_disaster_reverses_each_payment_exactly_once() {
    let journey = Journey::start(NOW, Route::Direct).await;
    let seed = journey.seed().clone();
    let (district, expected) = district_with_every_path(&seed);
    let eligible: Vec<&Expected> = expected.iter().filter(|e| e.eligible).collect();
    let total: f64 = eligible.iter().map(|e| e.amount).sum();
    let refused = expected.len() - eligible.len();

    // The disaster management agency declares the disaster (message start).
    let published = journey
        .engine
        .publish(
            govflow_engine::engine::Message {
                name: "disasterDeclared".to_owned(),
                correlation_key: format!("{DISASTER}/{district}"),
                variables: support::vars(
                    json!({"disasterId": DISASTER, "district": district, "damageLevel": "moderate"}),
                ),
                ..Default::default()
            },
            &govflow_engine::audit::Actor::user("disaster-agency", None),
        )
        .unwrap();
    let first = published.started[0];
    journey.ended(first).await;
    check_summary(
        &journey.var(first, "summary"),
        &district,
        expected.len(),
        eligible.len(),
        refused,
        0,
        total,
    );
    let credentials_after_first = journey.sandbox.registry("relief-credentials");
    assert_eq!(credentials_after_first.len(), eligible.len());

    // A relief officer runs it again for the same disaster: paid again, the credential is refused as a
    // duplicate, and the compensation handler reverses the payment.
    let second = journey
        .start_instance(
            "farmer-relief",
            json!({"disasterId": DISASTER, "district": district, "damageLevel": "moderate"}),
        )
        .await;
    journey.ended(second).await;
    check_summary(
        &journey.var(second, "summary"),
        &district,
        expected.len(),
        0,
        refused,
        eligible.len(),
        0.0,
    );
    let results = results(&journey, second);
    let reversed = reversals(&journey);
    assert_eq!(reversed.len(), eligible.len(), "one reversal per paid farmer: {reversed:#?}");
    let by_batch: BTreeMap<&str, &Disbursement> = reversed.iter().map(|d| (d.batch_id.as_str(), d)).collect();
    assert_eq!(by_batch.len(), eligible.len());
    let payments = relief_payments(&journey);
    for e in &eligible {
        let farmer = &e.farmer;
        let result = &results[&farmer.id];
        assert_eq!(
            (result["outcome"].as_str(), result["reason"].as_str()),
            (Some("failed"), Some("credential not created: payment reversed")),
            "{result}"
        );
        assert!(result["credentialId"].is_null(), "{result}");
        let paid: Vec<&Disbursement> =
            payments.iter().filter(|d| d.payee_value == farmer.national_id).collect();
        assert_eq!(paid.len(), 2, "paid once per run: {paid:#?}");
        assert_eq!(result["paymentBatchId"], paid[1].batch_id.as_str());
        let reversal = by_batch[result["reversalBatchId"].as_str().unwrap()];
        assert_eq!(reversal.amount, e.amount);
        assert_eq!(reversal.payee_key, "accountNumber", "credited to the programme account");
        assert_eq!(reversal.description.as_deref(), Some(format!("Reversal: relief {DISASTER}").as_str()));
    }
    for e in expected.iter().filter(|e| !e.eligible) {
        assert_eq!(results[&e.farmer.id]["outcome"], "refused");
    }
    // Compensation ran in the second run only, once per farmer; the first run's credentials stand alone.
    let n_reversals = |key: InstanceKey| journey.n_completed(key, "Activity_ReversePayment");
    assert_eq!((n_reversals(first), n_reversals(second)), (0, eligible.len()));
    assert_eq!(journey.n_completed(second, "Event_Reversed"), eligible.len());
    assert_eq!(journey.sandbox.registry("relief-credentials"), credentials_after_first);
    let thrown = journey
        .events(second)
        .into_iter()
        .filter(|event| matches!(event, Event::JobErrorThrown { error_code, .. } if error_code == "DUPLICATE_RECORD"))
        .count();
    assert_eq!(thrown, eligible.len());
    assert!(journey.sandbox.mediator_log().is_empty(), "called directly");
    assert!(journey.sandbox.messages().is_empty());
    assert_eq!(journey.n_incidents(), 0);
    assert_eq!(
        journey.stored(first).meta.business_key.as_deref(),
        Some(format!("{DISASTER}/{district}").as_str())
    );
    assert_eq!(journey.verify_all(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payments_bb_down_during_a_run_raises_one_incident_per_farmer_and_each_is_paid_once_after_resolution(
) {
    let journey = Journey::start(NOW, Route::Direct).await;
    let seed = journey.seed().clone();
    let (district, expected) = district_with_every_path(&seed);
    let eligible: Vec<&Expected> = expected.iter().filter(|e| e.eligible).collect();
    let total: f64 = eligible.iter().map(|e| e.amount).sum();
    journey.sandbox.set_fault(Service::Payments, Fault { down: true, ..Fault::default() });

    let key = journey
        .start_instance(
            "farmer-relief",
            json!({"disasterId": DISASTER, "district": district, "damageLevel": "low"}),
        )
        .await;
    // Each eligible farmer's first Payments BB call (the voucher, or the payment) runs out of retries.
    let incidents = journey
        .until("one incident per eligible farmer", || {
            let incidents = journey.engine.store().incidents(None, usize::MAX).unwrap();
            (incidents.len() == eligible.len()).then_some(incidents)
        })
        .await;
    let mut elements: Vec<&str> = incidents.iter().map(|i| i.element.as_str()).collect();
    elements.sort();
    let n_vouchers = eligible.iter().filter(|e| e.farmer.bank_account.is_none()).count();
    let mut wanted = vec!["Activity_IssueVoucher"; n_vouchers];
    wanted.extend(vec!["Activity_PayRelief"; eligible.len() - n_vouchers]);
    assert_eq!(elements, wanted);
    let n_failed =
        journey.events(key).iter().filter(|event| matches!(event, Event::JobFailed { .. })).count();
    assert_eq!(n_failed, 5 * eligible.len(), "five attempts each");
    assert!(journey.sandbox.disbursements().is_empty());
    assert!(journey.stored(key).state.is_active());

    // The BB is back; an operator retries each step.
    journey.sandbox.clear_faults();
    for incident in incidents {
        let command = Command::ResolveIncident { incident: incident.incident, variables: VariableMap::new() };
        journey.shell.command(key, command, Actor::user("operator-1", None)).await.unwrap();
    }
    journey.ended(key).await;
    assert_eq!(journey.n_incidents(), 0);
    check_summary(
        &journey.var(key, "summary"),
        &district,
        expected.len(),
        eligible.len(),
        expected.len() - eligible.len(),
        0,
        total,
    );

    // Exactly once each, under the key of the one payment job of each farmer.
    let pay_jobs: BTreeSet<String> = journey
        .events(key)
        .into_iter()
        .filter_map(|event| match event {
            Event::JobCreated { job, element, .. } if element.0 == "Activity_PayRelief" => {
                Some(idempotency_key(key, job))
            }
            _ => None,
        })
        .collect();
    assert_eq!(pay_jobs.len(), eligible.len());
    let payments = relief_payments(&journey);
    assert_eq!(payments.len(), eligible.len(), "{payments:#?}");
    let paid_keys: BTreeSet<String> = payments.iter().map(|d| d.request_id.clone()).collect();
    assert_eq!(paid_keys, pay_jobs);
    for e in &eligible {
        let paid: Vec<&Disbursement> =
            payments.iter().filter(|d| d.payee_value == e.farmer.national_id).collect();
        assert_eq!(paid.len(), 1, "{}: {paid:#?}", e.farmer.id);
        assert_eq!(paid[0].amount, e.amount);
        if e.farmer.bank_account.is_none() {
            assert_eq!(paid[0].financial_address, voucher_number(&e.farmer));
        }
    }
    assert_eq!(journey.sandbox.registry("relief-credentials").len(), eligible.len());
    assert_eq!(journey.verify_all(), 1);
}

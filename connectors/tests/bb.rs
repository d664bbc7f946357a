//! The GovStack connectors end to end: a real engine and shell run small zeebe-dialect processes whose
//! service tasks call the sandbox of simulated building blocks. For each connector: success, a business
//! error caught by an error boundary event, and a retryable failure that retries, becomes an incident and
//! completes once an operator resolves it after the fault is cleared; the payment callback; routing
//! through the Information Mediator. Waits poll the engine with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bb_support;

use bb_support::{variables, world, Task, CLIENT};
use govflow_connectors::bb::{http, identity, messaging, payments, registries};
use govflow_connectors::config::{MediatorConfig, Secret};
use govflow_connectors::sandbox::{Channel, Fault, Service};
use govflow_engine::runtime::{Event, InstanceKey, InstanceStatus};
use serde_json::{json, Value};

/// The idempotency key of the (first) job of an instance.
fn job_key(world: &bb_support::World, key: InstanceKey) -> String {
    let job = world
        .events(key)
        .into_iter()
        .find_map(|event| match event {
            Event::JobCreated { job, .. } => Some(job),
            _ => None,
        })
        .expect("a job was created");
    format!("{key}-{job}")
}

/// The message of the BPMN error a job threw.
fn thrown(world: &bb_support::World, key: InstanceKey) -> (String, String) {
    world
        .events(key)
        .into_iter()
        .find_map(|event| match event {
            Event::JobErrorThrown { error_code, message, .. } => Some((error_code, message)),
            _ => None,
        })
        .expect("the job threw a BPMN error")
}

fn verify_task() -> Task {
    Task::new(identity::VERIFY)
        .input("=applicant.nationalId", "nationalId")
        .input("=applicant.firstName", "firstName")
        .input("=applicant.lastName", "lastName")
        .input("=applicant.birthDate", "birthDate")
        .output("=identity", "verifiedIdentity")
        .catches(identity::ID_NOT_VERIFIED)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_verify_runs_the_oidc_flow_and_throws_id_not_verified() {
    let world = world(|_, _| {}).await;
    let seed = world.sandbox.seed_data().clone();
    let mother = seed.verified_mother();
    let applicant = |first: &str| {
        json!({"applicant": {"nationalId": mother.national_id, "firstName": first.to_uppercase(),
                             "lastName": mother.last_name, "birthDate": mother.birth_date}})
    };
    let task = verify_task();
    let verified = world.start("verify", &task, applicant(&mother.first_name)).await;
    let wrong_name = world.start("verify", &task, applicant("Nobody")).await;
    let unknown =
        world.start("verify", &task, json!({"applicant": {"nationalId": seed.unknown_national_id()}})).await;
    let deceased = world
        .start("verify", &task, json!({"applicant": {"nationalId": seed.deceased_person().national_id}}))
        .await;

    let stored = world.finished(verified).await;
    assert_eq!(stored.meta.status, InstanceStatus::Completed);
    assert!(world.reached(verified, "done"));
    let identity = &variables(&stored)["verifiedIdentity"];
    assert_eq!(identity["verified"], true);
    assert_eq!(identity["method"], "oidc");
    assert_eq!(identity["given_name"], mother.first_name.as_str());
    assert_eq!(identity["birthdate"], mother.birth_date.as_str());
    assert_eq!(identity["individual_id"], mother.national_id.as_str());
    assert!(identity["sub"].as_str().is_some_and(|sub| !sub.is_empty()));

    for (key, says) in [
        (wrong_name, "firstName (given_name) differ"),
        (unknown, "access_denied"),
        (deceased, "access_denied"),
    ] {
        world.finished(key).await;
        assert!(world.reached(key, "rejected"), "instance {key} takes the error path");
        let (code, message) = thrown(&world, key);
        assert_eq!(code, identity::ID_NOT_VERIFIED);
        assert!(message.contains(says), "{message}");
        assert!(!message.contains(&mother.national_id), "no national id in messages: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_verify_retries_then_an_incident_is_resolved_by_an_operator() {
    let world = world(|_, _| {}).await;
    let mother = world.sandbox.seed_data().verified_mother().clone();
    world.sandbox.set_fault(Service::Identity, Fault { down: true, ..Fault::default() });
    let task = verify_task().fragile();
    let key = world.start("verify", &task, json!({"applicant": {"nationalId": mother.national_id}})).await;
    let incident = world.incident(key).await;
    assert!(incident.message.contains("HTTP 503"), "{}", incident.message);
    assert_eq!(world.n_failures(key), 2, "two attempts, then the incident");
    world.sandbox.clear_faults();
    world.resolve(&incident).await;
    let stored = world.finished(key).await;
    assert!(world.reached(key, "done"));
    assert_eq!(variables(&stored)["verifiedIdentity"]["verified"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_verify_by_registry_reads_the_population_register() {
    let world = world(|_, _| {}).await;
    let seed = world.sandbox.seed_data().clone();
    let mother = seed.verified_mother();
    let task = Task::new(identity::VERIFY_BY_REGISTRY)
        .input("=id", "nationalId")
        .input("=first", "firstName")
        .catches(identity::ID_NOT_VERIFIED);
    let verified = world
        .start("by-registry", &task, json!({"id": mother.national_id, "first": mother.first_name}))
        .await;
    let deceased = world.start("by-registry", &task, json!({"id": seed.deceased_person().national_id})).await;
    let unknown = world.start("by-registry", &task, json!({"id": seed.unknown_national_id()})).await;
    let stored = world.finished(verified).await;
    assert!(world.reached(verified, "done"));
    let identity = &variables(&stored)["identity"];
    assert_eq!(identity["method"], "registry");
    assert_eq!(identity["sub"], mother.national_id.as_str());
    assert_eq!(identity["name"], format!("{} {}", mother.first_name, mother.last_name));
    for (key, says) in [(deceased, "deceased"), (unknown, "no person")] {
        world.finished(key).await;
        assert!(world.reached(key, "rejected"));
        let (code, message) = thrown(&world, key);
        assert_eq!(code, identity::ID_NOT_VERIFIED);
        assert!(message.contains(says), "{message}");
    }
}

/// Runs one task to its end; returns the instance.
async fn run(world: &bb_support::World, id: &str, task: &Task, variables: Value) -> InstanceKey {
    let key = world.start(id, task, variables).await;
    world.finished(key).await;
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_read_write_list_and_delete_with_bpmn_errors() {
    let world = world(|_, _| {}).await;
    let seed = world.sandbox.seed_data().clone();
    let mother = seed.verified_mother();
    let (_, birth) = seed.registered_birth();
    let on = |job_type: &str, registry: &str| {
        Task::new(job_type).header("registry", registry).header("version", "1.0")
    };

    let read = on(registries::READ, "population-register")
        .input("={ID: id}", "query")
        .catches(registries::RECORD_NOT_FOUND);
    let found = run(&world, "read", &read, json!({"id": mother.national_id})).await;
    assert!(world.reached(found, "done"));
    assert_eq!(
        variables(&world.engine.instance(found).unwrap())["record"]["firstName"],
        mother.first_name.as_str()
    );
    let missing = run(&world, "read", &read, json!({"id": seed.unknown_national_id()})).await;
    assert!(world.reached(missing, "rejected"), "a missing record takes the error path");
    assert_eq!(thrown(&world, missing).0, registries::RECORD_NOT_FOUND);

    let exists = on(registries::EXISTS, "civil-register")
        .input("={certificateNumber: cert}", "query")
        .output("=exists", "duplicate");
    let key = run(&world, "exists", &exists, json!({"cert": birth.certificate_number})).await;
    assert_eq!(variables(&world.engine.instance(key).unwrap())["duplicate"], true);

    // `record` is both an input and an output: an output mapping takes the result out of the task's scope.
    let create = on(registries::CREATE, "civil-register")
        .input("=birth", "record")
        .output("=record", "record")
        .catches(registries::DUPLICATE_RECORD);
    let again = json!({"birth": {"certificateNumber": birth.certificate_number, "childFirstName": birth.child_first_name}});
    let duplicate = run(&world, "create", &create, again).await;
    assert!(world.reached(duplicate, "rejected"), "creating a registered birth again is a duplicate");
    assert_eq!(thrown(&world, duplicate).0, registries::DUPLICATE_RECORD);
    let fresh = json!({"birth": {"certificateNumber": "BC-TEST-1", "childFirstName": "Nia", "motherId": mother.national_id}});
    let created = run(&world, "create", &create, fresh).await;
    assert!(world.reached(created, "done"));
    let record = variables(&world.engine.instance(created).unwrap())["record"].clone();
    assert_eq!(record["childFirstName"], "Nia");
    let id = record["ID"].as_str().expect("the registry assigned an ID").to_owned();
    assert!(world.sandbox.registry("civil-register").iter().any(|r| r["ID"] == id.as_str()));

    let update = on(registries::UPDATE, "civil-register")
        .input("={ID: id}", "query")
        .input("={childFirstName: name}", "record")
        .output("=record", "record")
        .catches(registries::RECORD_NOT_FOUND);
    let updated = run(&world, "update", &update, json!({"id": id, "name": "Nadia"})).await;
    assert_eq!(variables(&world.engine.instance(updated).unwrap())["record"]["childFirstName"], "Nadia");
    let not_there = run(&world, "update", &update, json!({"id": "BC-NONE", "name": "X"})).await;
    assert!(world.reached(not_there, "rejected"));

    let upsert = on(registries::UPDATE_OR_CREATE, "test-register")
        .input("={ID: \"T-1\"}", "query")
        .input("={ID: \"T-1\", n: n}", "record");
    run(&world, "upsert", &upsert, json!({"n": 1})).await;
    run(&world, "upsert", &upsert, json!({"n": 2})).await;
    assert_eq!(
        world.sandbox.registry("test-register"),
        [json!({"ID": "T-1", "n": 2})],
        "updated, not created twice"
    );

    let list = on(registries::LIST, "population-register")
        .input("={district: district}", "query")
        .input("=2", "pageSize")
        .output("=records", "people")
        .output("=count", "n")
        .output("=next", "next");
    let listed = run(&world, "list", &list, json!({"district": mother.district})).await;
    let listed = variables(&world.engine.instance(listed).unwrap());
    let n_in_district = seed.persons().iter().filter(|p| p.district == mother.district).count();
    assert_eq!(listed["n"], json!(n_in_district));
    assert_eq!(listed["people"].as_array().unwrap().len(), n_in_district.min(2));
    assert!(listed["people"].as_array().unwrap().iter().all(|p| p["district"] == mother.district.as_str()));
    assert_eq!(listed["next"].is_string(), n_in_district > 2);

    let delete =
        on(registries::DELETE, "civil-register").input("=id", "id").catches(registries::RECORD_NOT_FOUND);
    let deleted = run(&world, "delete", &delete, json!({"id": id})).await;
    assert_eq!(variables(&world.engine.instance(deleted).unwrap())["deleted"], true);
    let gone = run(&world, "delete", &delete, json!({"id": id})).await;
    assert!(world.reached(gone, "rejected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_failures_retry_then_an_incident_is_resolved() {
    let world = world(|_, _| {}).await;
    let mother = world.sandbox.seed_data().verified_mother().clone();
    world.sandbox.set_fault(Service::Registries, Fault { error_rate: 1.0, ..Fault::default() });
    let task = Task::new(registries::READ)
        .header("registry", "population-register")
        .input("={ID: id}", "query")
        .fragile();
    let key = world.start("read", &task, json!({"id": mother.national_id})).await;
    let incident = world.incident(key).await;
    assert!(incident.message.contains("HTTP 500"), "{}", incident.message);
    assert_eq!(world.n_failures(key), 2);
    world.sandbox.clear_faults();
    world.resolve(&incident).await;
    let stored = world.finished(key).await;
    assert_eq!(variables(&stored)["record"]["ID"], mother.national_id.as_str());
}

fn disburse_task() -> Task {
    Task::new(payments::DISBURSE)
        .header("programmeAccount", "PROG-0001")
        .header("programId", "CROP-RELIEF")
        .input("=beneficiary.nationalId", "payee")
        .input("=amount", "amount")
        .input("=\"USD\"", "currency")
        .input("=\"Crop relief\"", "description")
        .output("=payment", "payment")
        .catches(payments::PAYMENT_FAILED)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_disburse_waits_for_the_callback_and_pays_each_beneficiary_once() {
    let world = world(|_, _| {}).await;
    let seed = world.sandbox.seed_data().clone();
    let paid = seed.farmer_with_bank_account();
    let unpayable = seed.farmer_without_bank_account();
    let task = disburse_task();
    let ok = world
        .start("pay", &task, json!({"beneficiary": {"nationalId": paid.national_id}, "amount": 120.5}))
        .await;
    let failed = world
        .start("pay", &task, json!({"beneficiary": {"nationalId": unpayable.national_id}, "amount": 80}))
        .await;

    let stored = world.finished(ok).await;
    assert!(world.reached(ok, "done"));
    let payment = &variables(&stored)["payment"];
    assert_eq!(payment["status"], "COMPLETED");
    assert_eq!(payment["amount"], 120.5);
    assert_eq!(payment["currency"], "USD");
    assert!(payment["batchId"].as_str().is_some_and(|batch| batch.starts_with("batch-")));
    // The job was completed by the callback, not by the connector.
    let by_callback = govflow_engine::store::OperationFilter {
        user: Some("payments-bb-callback".to_owned()),
        instance: Some(ok),
        ..Default::default()
    };
    assert!(
        !world.engine.operations(&by_callback, 0, usize::MAX).unwrap().is_empty(),
        "the callback (not the connector) completed the job"
    );

    world.finished(failed).await;
    assert!(world.reached(failed, "rejected"), "a failed payment takes the error path");
    let (code, message) = thrown(&world, failed);
    assert_eq!(code, payments::PAYMENT_FAILED);
    assert!(message.contains("no account"), "{message}");

    let disbursements = world.sandbox.disbursements();
    assert_eq!(disbursements.len(), 1, "{disbursements:?}");
    let d = &disbursements[0];
    assert_eq!((d.payee_key.as_str(), d.payee_value.as_str()), ("nationalId", paid.national_id.as_str()));
    assert_eq!(Some(&d.financial_address), paid.bank_account.as_ref());
    assert_eq!(d.request_id, job_key(&world, ok), "the requestId is the job's idempotency key");
    assert_eq!(d.correlation_id, d.request_id);
    assert_eq!((d.tenant_id.as_str(), d.description.as_deref()), ("govflow", Some("Crop relief")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_failures_retry_then_an_incident_is_resolved_and_pay_once() {
    let world = world(|_, _| {}).await;
    let farmer = world.sandbox.seed_data().farmer_with_bank_account().clone();
    world.sandbox.set_fault(Service::Payments, Fault { down: true, ..Fault::default() });
    let task = disburse_task().fragile();
    let key = world
        .start("pay", &task, json!({"beneficiary": {"nationalId": farmer.national_id}, "amount": 10}))
        .await;
    let incident = world.incident(key).await;
    assert!(incident.message.contains("HTTP 503"), "{}", incident.message);
    assert_eq!(world.n_failures(key), 2);
    assert!(world.sandbox.disbursements().is_empty());
    world.sandbox.clear_faults();
    world.resolve(&incident).await;
    world.finished(key).await;
    assert!(world.reached(key, "done"));
    let disbursements = world.sandbox.disbursements();
    assert_eq!(disbursements.len(), 1);
    assert_eq!(disbursements[0].request_id, job_key(&world, key), "the same key after the operator's retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_register_a_beneficiary_then_pay_and_reverse() {
    let world = world(|_, _| {}).await;
    let newcomer = world.sandbox.seed_data().unknown_national_id().to_owned();
    let register = Task::new(payments::REGISTER_BENEFICIARY)
        .header("registeringInstitution", "MINSOC")
        .input("=id", "payee")
        .input("=\"mobileMoney\"", "paymentModality")
        .input("=phone", "financialAddress");
    let key = run(&world, "register", &register, json!({"id": newcomer, "phone": "+99971234567"})).await;
    assert!(world.reached(key, "done"));
    assert_eq!(variables(&world.engine.instance(key).unwrap())["beneficiary"]["status"], "RECEIVED");
    let mapped = world.sandbox.beneficiaries();
    let entry =
        mapped.iter().find(|b| b["payeeIdentity"] == newcomer.as_str()).expect("registered in the mapper");
    assert_eq!(
        (entry["paymentModality"].as_str(), entry["financialAddress"].as_str()),
        (Some("01"), Some("+99971234567"))
    );
    assert_eq!(entry["registeringInstitutionId"], "MINSOC");

    let pay =
        run(&world, "pay", &disburse_task(), json!({"beneficiary": {"nationalId": newcomer}, "amount": 50}))
            .await;
    assert!(world.reached(pay, "done"));
    let reverse = Task::new(payments::REVERSE)
        .header("programmeAccount", "PROG-0001")
        .input("=id", "payee")
        .input("=50", "amount")
        .input("=\"USD\"", "currency")
        .input("=batch", "originalBatchId")
        .catches(payments::PAYMENT_FAILED);
    let batch = variables(&world.engine.instance(pay).unwrap())["payment"]["batchId"].clone();
    let reversed = run(&world, "reverse", &reverse, json!({"id": newcomer, "batch": batch})).await;
    assert!(world.reached(reversed, "done"));
    let disbursements = world.sandbox.disbursements();
    assert_eq!(disbursements.len(), 2);
    assert_eq!(disbursements[0].financial_address, "+99971234567", "paid to the registered address");
    let back = &disbursements[1];
    assert_eq!((back.payee_key.as_str(), back.payee_value.as_str()), ("accountNumber", "PROG-0001"));
    assert_eq!(back.request_id, job_key(&world, reversed), "the reversal has its own request id");
    assert_eq!(
        back.description.as_deref(),
        Some(format!("Reversal of {}", batch.as_str().unwrap()).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_sends_email_batches_and_sms() {
    let world = world(|_, _| {}).await;
    let email = Task::new(messaging::EMAIL)
        .header("senderName", "Civil registry")
        .input("=applicant.email", "to")
        .input("=\"Birth registered\"", "subject")
        .input("=\"Certificate \" + cert", "body")
        .output("=message.requestUid", "uid");
    let key =
        run(&world, "email", &email, json!({"applicant": {"email": "amina@example.org"}, "cert": "BC-1"}))
            .await;
    let uid = variables(&world.engine.instance(key).unwrap())["uid"].clone();
    let sms = Task::new(messaging::SMS).send_task().input("=phone", "to").input("=\"Paid\"", "message");
    run(&world, "sms", &sms, json!({"phone": "+99970000001"})).await;
    let batch = Task::new(messaging::EMAIL_BATCH).input("=to", "to").input("=\"Hello\"", "body");
    run(&world, "batch", &batch, json!({"to": ["a@example.org", "b@example.org"]})).await;

    let messages = world.sandbox.messages();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[0].channel, Channel::Email);
    assert_eq!(
        (messages[0].to.as_str(), messages[0].subject.as_deref()),
        ("amina@example.org", Some("Birth registered"))
    );
    assert_eq!(messages[0].body, "Certificate BC-1");
    assert_eq!(uid, messages[0].request_uid.as_str());
    assert_eq!(
        (messages[1].channel, messages[1].to.as_str(), messages[1].body.as_str()),
        (Channel::Sms, "+99970000001", "Paid")
    );
    assert_eq!(messages[2].request_uid, messages[3].request_uid, "one batch request");
    assert_eq!((messages[2].to.as_str(), messages[3].to.as_str()), ("a@example.org", "b@example.org"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_failures_retry_and_a_refused_key_is_an_incident_at_once() {
    let world = world(|_, _| {}).await;
    world.sandbox.set_fault(Service::Messaging, Fault { down: true, ..Fault::default() });
    let email =
        Task::new(messaging::EMAIL).input("=\"a@example.org\"", "to").input("=\"Hi\"", "body").fragile();
    let key = world.start("email", &email, json!({})).await;
    let incident = world.incident(key).await;
    assert_eq!(world.n_failures(key), 2);
    world.sandbox.clear_faults();
    world.resolve(&incident).await;
    world.finished(key).await;
    assert!(world.reached(key, "done"));
    assert_eq!(world.sandbox.messages().len(), 1);

    let wrong_key =
        bb_support::world(|config, _| config.messaging.api_key = Some(Secret::new("not-the-key"))).await;
    let key = wrong_key.start("email", &email, json!({})).await;
    let incident = wrong_key.incident(key).await;
    assert!(incident.message.contains("refused our API key"), "{}", incident.message);
    assert!(!incident.message.contains("not-the-key"), "a secret in an incident: {}", incident.message);
    assert_eq!(wrong_key.n_failures(key), 1, "permanent: no retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_calls_a_bb_path_or_a_url_and_maps_error_codes() {
    let world = world(|_, _| {}).await;
    let mother = world.sandbox.seed_data().verified_mother().clone();
    let list = Task::new(http::HTTP_JSON)
        .header("bb", "registries")
        .input("=\"/data/population-register/1.0\"", "path")
        .input("={\"Information-Mediator-Client\": client}", "headers")
        .input("={pageSize: 2}", "query")
        .output("=response.status", "status")
        .output("=response.body.count", "count");
    let key = run(&world, "list", &list, json!({"client": CLIENT})).await;
    let listed = variables(&world.engine.instance(key).unwrap());
    assert_eq!(listed["status"], 200);
    assert_eq!(listed["count"], json!(world.sandbox.seed_data().persons().len()));

    let read = Task::new(http::HTTP_JSON)
        .header("errorCodes", "404=RECORD_NOT_FOUND")
        .input("=\"POST\"", "method")
        .input("=url", "url")
        .input("={\"Information-Mediator-Client\": client}", "headers")
        .input("={query: {content: {ID: id}}}", "body")
        .output("=response.body.content.firstName", "firstName")
        .catches("RECORD_NOT_FOUND");
    let url = format!("{}/data/population-register/1.0/read", world.sandbox.base_url(Service::Registries));
    let found =
        run(&world, "read", &read, json!({"url": url, "client": CLIENT, "id": mother.national_id})).await;
    assert_eq!(variables(&world.engine.instance(found).unwrap())["firstName"], mother.first_name.as_str());
    let missing = run(&world, "read", &read, json!({"url": url, "client": CLIENT, "id": "nobody"})).await;
    assert!(world.reached(missing, "rejected"));
    // A 4xx not named in errorCodes (here: no client header) is an incident at once.
    let key = world.start("read", &read, json!({"url": url, "client": null, "id": "x"})).await;
    let incident = world.incident(key).await;
    assert!(incident.message.contains("HTTP 400"), "{}", incident.message);
    assert_eq!(world.n_failures(key), 1);

    world.sandbox.set_fault(Service::Registries, Fault { down: true, ..Fault::default() });
    let key = world.start("list-fragile", &list.clone().fragile(), json!({"client": CLIENT})).await;
    let incident = world.incident(key).await;
    assert_eq!(world.n_failures(key), 2);
    world.sandbox.clear_faults();
    world.resolve(&incident).await;
    world.finished(key).await;
    assert!(world.reached(key, "done"));
}

/// Routes registries, identity and payments through the sandbox's Information Mediator as `client`.
fn through_the_mediator(
    client: &str,
) -> impl FnOnce(&mut govflow_connectors::config::ConnectorsConfig, &govflow_connectors::sandbox::Sandbox) + '_
{
    move |config, sandbox| {
        config.mediator = Some(MediatorConfig {
            url: sandbox.base_url(Service::Mediator),
            client: client.to_owned(),
            client_header: Default::default(),
        });
        config.registries.url = None;
        config.registries.service = Some("GOV/GOV/REG/REGISTRY/registries".to_owned());
        config.identity.url = None;
        config.identity.service = Some("GOV/GOV/IDP/IDENTITY/identity".to_owned());
        config.payments.url = None;
        config.payments.service = Some("GOV/GOV/TREASURY/PAYMENTS/payments".to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_through_the_information_mediator_with_the_job_key() {
    let world = world(through_the_mediator(CLIENT)).await;
    let seed = world.sandbox.seed_data().clone();
    let mother = seed.verified_mother();
    let read =
        Task::new(registries::READ).header("registry", "population-register").input("={ID: id}", "query");
    let key =
        run(&world, "read", &read, json!({"id": mother.national_id, "actingUser": "registrar-7"})).await;
    assert_eq!(variables(&world.engine.instance(key).unwrap())["record"]["ID"], mother.national_id.as_str());
    let log = world.sandbox.mediator_log();
    let entry =
        log.iter().find(|entry| entry.path.ends_with("/read")).expect("the read went through the mediator");
    // The log's path may or may not keep the mediator's own `/im` prefix.
    assert!(
        entry.path.ends_with("/r1/GOV/GOV/REG/REGISTRY/registries/data/population-register/1.0/read"),
        "{}",
        entry.path
    );
    assert_eq!(
        (entry.client_header.as_deref(), entry.client_id.as_deref()),
        (Some("X-Road-Client"), Some(CLIENT))
    );
    assert_eq!(entry.x_road_id, job_key(&world, key), "X-Road-Id is the idempotency key");
    assert_eq!(entry.x_road_user_id.as_deref(), Some("registrar-7"));
    assert_eq!((entry.provider.as_str(), entry.service.as_str()), ("GOV/GOV/REG/REGISTRY", "registries"));
    assert!(entry.allowed);

    let verify = verify_task();
    let key = run(&world, "verify", &verify, json!({"applicant": {"nationalId": mother.national_id}})).await;
    assert!(world.reached(key, "done"), "the OIDC flow works through the mediator");
    let flow: Vec<String> = world
        .sandbox
        .mediator_log()
        .into_iter()
        .filter(|entry| entry.service == "identity" && entry.x_road_id == job_key(&world, key))
        .map(|entry| entry.path.rsplit("/identity").next().unwrap_or_default().to_owned())
        .collect();
    for step in ["/authorize", "/oauth/token", "/oidc/userinfo"] {
        assert!(flow.iter().any(|path| path == step), "{step} not mediated: {flow:?}");
    }

    let pay = run(
        &world,
        "pay",
        &disburse_task(),
        json!({"beneficiary": {"nationalId": seed.farmer_with_bank_account().national_id}, "amount": 5}),
    )
    .await;
    assert!(world.reached(pay, "done"));
    let entry = world.sandbox.mediator_log().into_iter().find(|entry| entry.service == "payments").unwrap();
    assert!(
        entry.path.ends_with("/r1/GOV/GOV/TREASURY/PAYMENTS/payments/batchtransactions"),
        "{}",
        entry.path
    );
    assert_eq!(entry.query.as_deref(), Some("type=raw"));
    assert_eq!(entry.x_road_id, job_key(&world, pay));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_the_mediator_does_not_allow_gets_an_incident_naming_the_x_road_error() {
    let world = world(through_the_mediator("GOV/GOV/OTHER/APP")).await;
    let mother = world.sandbox.seed_data().verified_mother().clone();
    let read =
        Task::new(registries::READ).header("registry", "population-register").input("={ID: id}", "query");
    let key = world.start("read", &read, json!({"id": mother.national_id})).await;
    let incident = world.incident(key).await;
    assert!(incident.message.contains("Client.AccessDenied"), "{}", incident.message);
    assert_eq!(world.n_failures(key), 1, "refused access is permanent: no retry");
    let log = world.sandbox.mediator_log();
    assert_eq!(log.len(), 1);
    assert!(!log[0].allowed);
}

/// A registries create retried after its answer was lost: the registry refuses it as a duplicate, and the
/// connector finds the record holding every field it meant to write, its own earlier write, and completes.
/// A first attempt refused as a duplicate, or a retry that finds a different record under the same ID,
/// throws `DUPLICATE_RECORD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_registries_create_that_finds_its_own_record_completes() {
    use govflow_connectors::connector::{ConnectorError, ConnectorRequest, Outcome};
    let sandbox = govflow_connectors::sandbox::Sandbox::start(bb_support::sandbox_config()).await.unwrap();
    let config = bb_support::direct_config(&sandbox, "http://127.0.0.1:9/callbacks");
    let connectors = govflow_connectors::bb::all(std::sync::Arc::new(config)).unwrap();
    let connector =
        connectors.iter().find(|c| c.job_types().iter().any(|t| t == registries::CREATE)).unwrap().clone();
    let create = |record: Value, attempt: u32, redelivered: bool| ConnectorRequest {
        job_type: registries::CREATE.to_owned(),
        element: "create".to_owned(),
        variables: [("record".to_owned(), record)].into_iter().collect(),
        headers: [("registry", "civil-register"), ("version", "1.0")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        idempotency_key: "7-42".to_owned(),
        attempt,
        redelivered,
        user: None,
    };
    let record = json!({"ID": "BC-RETRY-1", "certificateNumber": "BC-RETRY-1", "childFirstName": "Zawadi",
                        "parents": {"mother": "M-1"}});
    // The first attempt wrote the record; its answer was lost (the job failed and is retried).
    let first = connector.invoke(create(record.clone(), 1, false)).await.unwrap();
    assert!(matches!(first, Outcome::Complete(_)));
    let retried = connector.invoke(create(record.clone(), 2, false)).await.unwrap();
    let Outcome::Complete(outputs) = retried else { panic!("the retry completes: {retried:?}") };
    assert_eq!(outputs["record"], record);
    assert_eq!(sandbox.registry("civil-register").iter().filter(|r| r["ID"] == "BC-RETRY-1").count(), 1);
    // govflow crashed after the write and before committing the completion: the job comes back after the
    // restart as attempt 1 (nothing failed), marked redelivered, and completes too.
    let redelivered = connector.invoke(create(record.clone(), 1, true)).await.unwrap();
    let Outcome::Complete(outputs) = redelivered else { panic!("the redelivery completes: {redelivered:?}") };
    assert_eq!(outputs["record"], record);
    assert_eq!(sandbox.registry("civil-register").iter().filter(|r| r["ID"] == "BC-RETRY-1").count(), 1);

    // The same record on a first delivery: somebody else's, a duplicate.
    let again = connector.invoke(create(record.clone(), 1, false)).await.unwrap_err();
    assert!(matches!(&again, ConnectorError::Business { code, .. } if code == registries::DUPLICATE_RECORD));
    // A retry whose record differs from the one under that ID: not its own, a duplicate.
    let other = json!({"ID": "BC-RETRY-1", "certificateNumber": "BC-RETRY-1", "childFirstName": "Imani"});
    let differs = connector.invoke(create(other, 3, true)).await.unwrap_err();
    assert!(
        matches!(&differs, ConnectorError::Business { code, .. } if code == registries::DUPLICATE_RECORD)
    );
}

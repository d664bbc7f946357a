//! User tasks: list (by assignee, candidate group, process), read with their form and variables, claim,
//! unclaim and complete. A claim is the engine's `AssignUserTask` command (event `UserTaskAssigned`, in
//! the audit trail; the task index keeps the assignee); a task claimed by someone else can only be
//! completed, claimed or given back by them or an admin. A task that is no longer open answers 409
//! saying how it ended; one the instance never had, 404.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use govflow_engine::runtime::{Command, Event, InstanceKey, Key, VariableMap};
use govflow_engine::store::{Store, StoredInstance, UserTaskEntry};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Auth, Operate, Principal, ReadInstances};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::view::{parse_pair_id, time};

/// How many index entries one list request looks at, at most, while filtering.
const SCAN_LIMIT: usize = 10_000;

/// An open user task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// `{instance}-{task}`.
    pub id: String,
    pub instance: u64,
    pub task: u64,
    pub process_id: String,
    pub element: String,
    pub name: Option<String>,
    /// Who works on it: whoever claimed it last, else the BPMN assignee (`zeebe:assignment`).
    pub assignee: Option<String>,
    pub candidate_groups: Vec<String>,
    pub candidate_users: Vec<String>,
    pub due_date: Option<String>,
    pub form_key: Option<String>,
}

/// A user task's form.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FormView {
    pub key: Option<String>,
    /// The form's JSON (Camunda Forms) when it is embedded in the process (`zeebe:userTaskForm`).
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
}

/// A user task with the variables it sees and its form.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskView,
    #[schema(value_type = Object)]
    pub variables: VariableMap,
    pub form: FormView,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    pub items: Vec<TaskView>,
    /// The cursor of the next page (`after`), `null` when the scan is done.
    pub next: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct TasksQuery {
    pub assignee: Option<String>,
    pub candidate_group: Option<String>,
    pub process_id: Option<String>,
    /// The cursor: a task id after which to continue.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

fn view(entry: &UserTaskEntry, stored: &StoredInstance) -> TaskView {
    TaskView {
        id: format!("{}-{}", entry.instance, entry.task),
        instance: entry.instance.0,
        task: entry.task.0,
        process_id: stored.meta.process_id.clone(),
        element: entry.element.clone(),
        name: entry.name.clone(),
        assignee: entry.assignee.clone(),
        candidate_groups: entry.candidate_groups.clone(),
        candidate_users: entry.candidate_users.clone(),
        due_date: entry.due_date.clone(),
        form_key: entry.form_key.clone(),
    }
}

/// Lists open user tasks, filtered by assignee, candidate group and process.
#[utoipa::path(get, path = "/api/v1/user-tasks", tag = "user-tasks", params(TasksQuery),
    responses((status = 200, body = TaskPage)))]
pub async fn list<S: Store + 'static>(
    _auth: Auth<ReadInstances>,
    State(state): State<AppState<S>>,
    ApiQuery(query): ApiQuery<TasksQuery>,
) -> ApiResult<ApiJson<TaskPage>> {
    let limit = state.page_size(query.limit)?;
    let after = query.after.as_deref().map(|id| parse_pair_id("after", id)).transpose()?;
    let page = state
        .blocking(move |engine| {
            let store = engine.store();
            let mut items = Vec::new();
            let mut cursor = after;
            let mut scanned = 0;
            let mut instances: HashMap<InstanceKey, Option<StoredInstance>> = HashMap::new();
            loop {
                let entries = store.user_tasks(cursor, 256)?;
                let Some(last) = entries.last() else { return Ok((items, None)) };
                let last = (last.instance, last.task);
                for entry in &entries {
                    scanned += 1;
                    cursor = Some((entry.instance, entry.task));
                    if query.candidate_group.as_ref().is_some_and(|g| !entry.candidate_groups.contains(g)) {
                        continue;
                    }
                    if query.assignee.is_some() && entry.assignee != query.assignee {
                        continue;
                    }
                    let stored = match instances.get(&entry.instance) {
                        Some(stored) => stored.clone(),
                        None => {
                            let stored = store.instance(entry.instance)?;
                            instances.insert(entry.instance, stored.clone());
                            stored
                        }
                    };
                    let Some(stored) = stored else { continue };
                    if query.process_id.as_ref().is_some_and(|p| p != &stored.meta.process_id) {
                        continue;
                    }
                    items.push(view(entry, &stored));
                    if items.len() == limit {
                        let next = cursor.map(|(i, t)| format!("{i}-{t}"));
                        return Ok((items, next));
                    }
                }
                if scanned >= SCAN_LIMIT {
                    return Ok((items, Some(format!("{}-{}", last.0, last.1))));
                }
            }
        })
        .await?;
    Ok(ApiJson(TaskPage { items: page.0, next: page.1 }))
}

/// The index entry and the instance of an open task. A task that is no longer open: 409 saying how it
/// ended (from the instance's history); a task the instance never had: 404.
async fn find<S: Store + 'static>(
    state: &AppState<S>,
    id: &str,
) -> ApiResult<(UserTaskEntry, StoredInstance)> {
    let (instance, task) = parse_pair_id("task", id)?;
    let found = state
        .blocking(move |engine| {
            let store = engine.store();
            let before = task.0.checked_sub(1).map(|previous| (instance, Key(previous)));
            let entry = store
                .user_tasks(before, 1)?
                .into_iter()
                .next()
                .filter(|e| e.instance == instance && e.task == task);
            let stored = store.instance(instance)?;
            if let Some(found) = entry.zip(stored) {
                return Ok(Ok(found));
            }
            // Not open: did it ever exist, and how did it end?
            let mut opened = false;
            let mut ended = None;
            for record in store.records(instance, 1, usize::MAX)? {
                match &record.event {
                    Event::UserTaskOpened { task: key, .. } if *key == task => opened = true,
                    Event::UserTaskCompleted { task: key, .. } if *key == task => {
                        ended =
                            Some(format!("was completed at {} by '{}'", time(&record.at), record.actor.user));
                    }
                    Event::UserTaskCancelled { task: key } if *key == task => {
                        ended =
                            Some(format!("was cancelled at {} (its element was ended)", time(&record.at)));
                    }
                    _ => {}
                }
            }
            Ok(Err((opened, ended)))
        })
        .await?;
    match found {
        Ok(found) => Ok(found),
        Err((true, Some(how))) => {
            Err(ApiError::Conflict(format!("user task {id} is no longer open: it {how}")))
        }
        Err(_) => Err(ApiError::NotFound(format!("no open user task {id}"))),
    }
}

/// A user task with the variables it sees and its form.
#[utoipa::path(get, path = "/api/v1/user-tasks/{task}", tag = "user-tasks",
    params(("task" = String, Path, description = "`{instance}-{task}`")),
    responses((status = 200, body = TaskDetail)))]
pub async fn get<S: Store + 'static>(
    _auth: Auth<ReadInstances>,
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<TaskDetail>> {
    let (entry, stored) = find(&state, &id).await?;
    let variables = stored
        .state
        .user_tasks
        .get(&entry.task)
        .map(|task| stored.state.visible_variables(task.element_instance).into_iter().collect())
        .unwrap_or_default();
    let schema = match entry.form_key.as_deref().and_then(|key| key.strip_prefix("camunda-forms:bpmn:")) {
        Some(form_id) => {
            let deployment =
                state.engine().store().deployment(&stored.meta.process_id, stored.meta.version)?;
            deployment
                .map(|deployment| state.process_info(&deployment))
                .and_then(|info| info.forms.get(form_id).cloned())
                .map(|body| serde_json::from_str(&body).unwrap_or(Value::String(body)))
        }
        None => None,
    };
    Ok(ApiJson(TaskDetail {
        form: FormView { key: entry.form_key.clone(), schema },
        task: view(&entry, &stored),
        variables,
    }))
}

/// Refuses to touch a task claimed by someone else (admins may).
fn check_claim(task: &TaskView, principal: &Principal) -> ApiResult<()> {
    match &task.assignee {
        Some(assignee) if assignee != &principal.user && !principal.is_admin() => Err(ApiError::Conflict(
            format!("user task {} is claimed by '{assignee}'; it must be unclaimed first", task.id),
        )),
        _ => Ok(()),
    }
}

async fn set_claim<S: Store + 'static>(
    state: &AppState<S>,
    auth: &Auth<Operate>,
    id: &str,
    assignee: Option<String>,
) -> ApiResult<TaskView> {
    let (entry, stored) = find(state, id).await?;
    check_claim(&view(&entry, &stored), &auth.principal)?;
    // Applies only if nobody claimed it meanwhile (an admin overrides whoever holds it).
    let expected = (!auth.principal.is_admin()).then(|| entry.assignee.clone());
    let command = Command::AssignUserTask { task: entry.task, assignee, expected };
    let shell = Arc::clone(state.shell());
    let actor = auth.actor();
    state.detached(async move { shell.command(entry.instance, command, actor).await }).await?;
    let (entry, stored) = find(state, id).await?;
    Ok(view(&entry, &stored))
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Who claims it (default: the caller).
    pub assignee: Option<String>,
}

/// Claims a user task (409 when someone else holds it).
#[utoipa::path(post, path = "/api/v1/user-tasks/{task}/claim", tag = "user-tasks",
    params(("task" = String, Path)), request_body = ClaimRequest,
    responses((status = 200, body = TaskView)))]
pub async fn claim<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ClaimRequest>,
) -> ApiResult<ApiJson<TaskView>> {
    let assignee = request.assignee.unwrap_or_else(|| auth.principal.user.clone());
    if assignee.trim().is_empty() {
        return Err(ApiError::invalid_field("assignee", "the assignee is empty"));
    }
    Ok(ApiJson(set_claim(&state, &auth, &id, Some(assignee)).await?))
}

/// Gives a user task back (409 when someone else holds it).
#[utoipa::path(post, path = "/api/v1/user-tasks/{task}/unclaim", tag = "user-tasks",
    params(("task" = String, Path)),
    responses((status = 200, body = TaskView)))]
pub async fn unclaim<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<ApiJson<TaskView>> {
    Ok(ApiJson(set_claim(&state, &auth, &id, None).await?))
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTaskRequest {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: VariableMap,
}

/// Completes a user task with variables.
#[utoipa::path(post, path = "/api/v1/user-tasks/{task}/complete", tag = "user-tasks",
    params(("task" = String, Path)), request_body = CompleteTaskRequest,
    responses((status = 204, description = "Completed")))]
pub async fn complete<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CompleteTaskRequest>,
) -> ApiResult<StatusCode> {
    let (entry, stored) = find(&state, &id).await?;
    check_claim(&view(&entry, &stored), &auth.principal)?;
    let command = Command::CompleteUserTask { task: entry.task, variables: request.variables };
    let shell = Arc::clone(state.shell());
    let actor = auth.actor();
    state.detached(async move { shell.command(entry.instance, command, actor).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! Timer start events: when a process starts on a schedule. Which start events of a process are timers,
//! when the first start is due, and when the next one is after a start fired. Pure: time is an argument,
//! FEEL sees no variables (a schedule belongs to the definition, not to an instance).
//!
//! # Contract
//! - `timeDate`: one start, at that instant (at once if it is past). `timeDuration`: one start, that long
//!   after the schedule was made (the deployment). `timeCycle`: every repetition of the cycle, anchored at
//!   the deployment; after downtime the overdue start fires once and the cycle resumes with its first due
//!   time after now — missed repetitions are skipped, never replayed in a burst (`Cycle::next_after`).
//! - `next_due` returns `None` when the schedule is spent (a date or duration that fired, `R5/..` after
//!   five starts).

use chrono::{DateTime, FixedOffset, Utc};

use super::definition::{Expr, ProcessDefinition, TimerExpr};
use crate::feel::eval::{self, Variables};
use crate::model::{ElementId, EventPosition};
use crate::timer::{parse_date_time, Cycle, IsoDuration};

/// The process's own start events (not an event sub-process's) that are timers.
pub fn timer_start_events(definition: &ProcessDefinition) -> Vec<ElementId> {
    let Some(root) = definition.scope(&definition.root_id()) else { return Vec::new() };
    root.nodes
        .iter()
        .filter(|id| {
            definition.node(id).is_some_and(|node| {
                node.timer.is_some()
                    && matches!(node.node.as_event().map(|e| &e.position), Some(EventPosition::Start { .. }))
            })
        })
        .cloned()
        .collect()
}

fn text(expr: &Expr, now: DateTime<FixedOffset>) -> Result<String, String> {
    match expr {
        Expr::Literal(text) => Ok(text.clone()),
        Expr::Feel(expression) => match eval::evaluate(expression, &Variables::new(), now) {
            Ok(serde_json::Value::String(text)) => Ok(text),
            Ok(other) => Ok(other.to_string()),
            Err(error) => Err(error.to_string()),
        },
    }
}

fn timer(definition: &ProcessDefinition, element: &ElementId) -> Result<TimerExpr, String> {
    definition.node(element).and_then(|node| node.timer.clone()).ok_or_else(|| {
        format!("'{element}' is not a timer start event of process '{}'", definition.process_id)
    })
}

/// When the first start of `element` is due, scheduled at `now` (the anchor of a cycle).
pub fn first_due(
    definition: &ProcessDefinition,
    element: &ElementId,
    now: DateTime<FixedOffset>,
) -> Result<Option<DateTime<FixedOffset>>, String> {
    let due = match timer(definition, element)? {
        TimerExpr::Date(expr) => Some(parse_date_time(&text(&expr, now)?).map_err(|e| e.to_string())?),
        TimerExpr::Duration(expr) => {
            IsoDuration::parse(&text(&expr, now)?).map_err(|e| e.to_string())?.add_to(&now)
        }
        TimerExpr::Cycle(expr) => {
            let cycle = Cycle::parse(&text(&expr, now)?).map_err(|e| e.to_string())?;
            let anchor = now.with_timezone(&Utc);
            cycle.next_after(anchor, 0, anchor).map(|due| due.fixed_offset())
        }
    };
    Ok(due)
}

/// After start number `fired` (1 for the first) of a schedule anchored at `anchor` fired at `now`: the
/// next due time, or `None` when the schedule is spent.
pub fn next_due(
    definition: &ProcessDefinition,
    element: &ElementId,
    anchor: DateTime<FixedOffset>,
    fired: u32,
    now: DateTime<FixedOffset>,
) -> Result<Option<DateTime<FixedOffset>>, String> {
    match timer(definition, element)? {
        TimerExpr::Date(_) | TimerExpr::Duration(_) => Ok(None),
        TimerExpr::Cycle(expr) => {
            let cycle = Cycle::parse(&text(&expr, now)?).map_err(|e| e.to_string())?;
            let anchor = anchor.with_timezone(&Utc);
            let after = now.with_timezone(&Utc).max(anchor);
            Ok(cycle.next_after(anchor, fired, after).map(|due| due.fixed_offset()))
        }
    }
}

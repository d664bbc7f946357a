//! Diagnostics: what is wrong with a BPMN file, as data. Parsing and validation never fail and never
//! panic; they return the model they could build plus a list of these. Codes are stable: a code, once
//! published, keeps its meaning (the table lives in docs/diagnostics.md).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{ElementId, Position};

/// How bad a diagnostic is. Errors block deployment; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

macro_rules! codes {
    ($($variant:ident = $code:literal, $summary:literal;)*) => {
        /// A stable diagnostic code, printed (and serialised) as `BPMNnnnn`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The printed form, e.g. `BPMN0007`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            /// One line saying what the code is about (for the docs table and `govflow validate --explain`).
            pub fn summary(self) -> &'static str {
                match self {
                    $(Code::$variant => $summary,)*
                }
            }
        }
    };
}

codes! {
    MalformedXml = "BPMN0001", "the file is not well-formed XML (or not valid UTF-8 / a supported encoding)";
    NotBpmn = "BPMN0002", "the root element is not a BPMN 2.0 `definitions` element";
    DtdRefused = "BPMN0003", "DTD and entity declarations are refused (XXE, billion laughs)";
    TooLarge = "BPMN0004", "the document is larger than the configured maximum size";
    TooDeep = "BPMN0005", "elements are nested deeper than the configured maximum";
    DuplicateId = "BPMN0006", "two elements share one id";
    DanglingReference = "BPMN0007", "a reference (sourceRef, targetRef, attachedToRef, default, messageRef, ...) names no element of the right kind";
    MissingAttribute = "BPMN0008", "a required attribute is missing or empty";
    InvalidAttribute = "BPMN0009", "an attribute has a value of the wrong form (boolean, number)";
    NoStartEvent = "BPMN0010", "an executable process has no start event";
    Unreachable = "BPMN0011", "a flow node cannot be reached from any start event";
    NoOutgoing = "BPMN0012", "a flow node that is not an end event has no outgoing sequence flow";
    MissingCondition = "BPMN0013", "an exclusive or inclusive gateway has an outgoing flow without condition that is not its default";
    InvalidFeel = "BPMN0014", "an expression is not valid FEEL";
    InvalidTimer = "BPMN0015", "a timer is not a valid ISO 8601 date, duration, repeating interval or cron expression";
    BoundaryOnNonActivity = "BPMN0016", "a boundary event is attached to something that is not an activity";
    MissingTaskType = "BPMN0017", "a job-based element has no zeebe:taskDefinition type";
    Unsupported = "BPMN0018", "the runtime cannot execute this element in an executable process";
    UnknownElement = "BPMN0019", "an element govflow does not recognise (kept, ignored)";
    CrossScopeFlow = "BPMN0020", "a sequence flow connects elements of different scopes";
    InvalidDefaultFlow = "BPMN0021", "a default flow is not an outgoing flow of its element, or has a condition";
    MissingMessage = "BPMN0022", "a message event or task lacks a message, a message name or a correlation key";
    MissingCalledElement = "BPMN0023", "a call activity names no process to call";
    MissingDecision = "BPMN0024", "a business rule task names no decision, or a script task no expression";
    InvalidMapping = "BPMN0025", "an input/output mapping or result variable is not a valid variable name or path";
    InvalidMultiInstance = "BPMN0026", "multi-instance has neither input collection nor cardinality";
    InvalidEventGateway = "BPMN0027", "an event-based gateway leads to something other than catch events or receive tasks";
    InvalidEventDefinition = "BPMN0028", "an event definition is not allowed where it is used";
    MissingReference = "BPMN0029", "an event definition lacks the reference it needs (signalRef, errorRef, ...)";
    ParallelJoinAfterExclusiveSplit = "BPMN0030", "likely deadlock: a parallel join waits for branches of an exclusive split, of which only one runs";
    ExclusiveJoinAfterParallelSplit = "BPMN0031", "lack of synchronisation: an exclusive join passes on each branch of a parallel split separately";
    CycleWithoutExit = "BPMN0032", "a cycle of sequence flows has no way out";
    NotDmn = "BPMN0033", "the root element is not a DMN 1.x `definitions` element";
    InvalidDecision = "BPMN0034", "a DMN decision is malformed (entry counts, outputs, requirements) or uses what govflow does not evaluate";
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Code, D::Error> {
        let text = String::deserialize(deserializer)?;
        Code::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown diagnostic code '{text}'")))
    }
}

impl Code {
    /// Execution-readiness rules: checked only in processes marked `isExecutable="true"`. The others
    /// are model rules, checked everywhere.
    pub fn is_execution_rule(self) -> bool {
        matches!(
            self,
            Code::NoStartEvent
                | Code::MissingCondition
                | Code::InvalidFeel
                | Code::InvalidTimer
                | Code::MissingTaskType
                | Code::Unsupported
                | Code::MissingMessage
                | Code::MissingCalledElement
                | Code::MissingDecision
                | Code::InvalidMapping
                | Code::InvalidMultiInstance
                | Code::InvalidEventGateway
                | Code::MissingReference
        )
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding about a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    /// The element the finding is about, when there is one.
    pub element: Option<ElementId>,
    /// Where in the file; `0:0` when unknown.
    pub pos: Position,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            element: None,
            pos: Position::default(),
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message) }
    }

    pub fn at(mut self, pos: Position) -> Diagnostic {
        self.pos = pos;
        self
    }

    pub fn on(mut self, element: &ElementId) -> Diagnostic {
        self.element = Some(element.clone());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `line:col: error[BPMN0007]: message (element 'Gateway_1')` — the caller prefixes the path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}[{}]: {}", self.pos, self.severity, self.code, self.message)?;
        if let Some(element) = &self.element {
            write!(f, " (element '{element}')")?;
        }
        Ok(())
    }
}

/// True when any diagnostic is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

//! BPMNDI: the diagram interchange part of a file (shape bounds, edge waypoints, label bounds), kept so
//! that instances can be drawn later. Nothing here affects execution.

use serde::{Deserialize, Serialize};

use super::{ElementId, Position};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diagram {
    pub id: Option<ElementId>,
    pub name: Option<String>,
    pub planes: Vec<DiagramPlane>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiagramPlane {
    pub id: Option<ElementId>,
    /// The process, collaboration or sub-process this plane draws.
    pub bpmn_element: Option<ElementId>,
    pub shapes: Vec<DiagramShape>,
    pub edges: Vec<DiagramEdge>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagramShape {
    pub id: Option<ElementId>,
    pub bpmn_element: Option<ElementId>,
    pub pos: Position,
    pub bounds: Option<Bounds>,
    pub label: Option<Bounds>,
    pub is_horizontal: Option<bool>,
    pub is_expanded: Option<bool>,
    pub is_marker_visible: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagramEdge {
    pub id: Option<ElementId>,
    pub bpmn_element: Option<ElementId>,
    pub pos: Position,
    pub waypoints: Vec<Point>,
    pub label: Option<Bounds>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

// What Camunda Modeler does when it opens a file, checked without the desktop app: it imports the XML with
// bpmn-moddle and the zeebe extension (zeebe-bpmn-moddle), shows every import warning, draws only elements
// that have diagram interchange (BPMNDI), and applies element templates by `zeebe:modelerTemplate` id.
//
// `node modeler-check.mjs FILE...` reports, per file, naming the element:
// - import warnings (unknown elements or attributes, unresolved references);
// - flow elements, boundary events and message flows without a BPMNShape / BPMNEdge, and DI naming no element;
// - a shape outside the expanded sub-process that contains it, or two shapes that overlap (other than a
//   boundary event on its host and an element on its own container);
// - a service or send task without an element template, or with a template id that is not in
//   connectors/element-templates.
// Exit code 0 only when there is nothing to report.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { BpmnModdle } from 'bpmn-moddle';

const require = createRequire(import.meta.url);
const zeebe = require('zeebe-bpmn-moddle/resources/zeebe.json');
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const templates = new Set();
for (const name of readdirSync(join(root, 'connectors', 'element-templates'))) {
  if (!name.endsWith('.json')) continue;
  const parsed = JSON.parse(readFileSync(join(root, 'connectors', 'element-templates', name), 'utf8'));
  for (const template of Array.isArray(parsed) ? parsed : [parsed]) templates.add(template.id);
}

const TEMPLATED = new Set(['bpmn:ServiceTask', 'bpmn:SendTask']);

function bounds(shape) {
  const { x, y, width, height } = shape.bounds;
  return { x, y, right: x + width, bottom: y + height };
}

function inside(inner, outer) {
  return inner.x >= outer.x && inner.y >= outer.y && inner.right <= outer.right && inner.bottom <= outer.bottom;
}

function overlap(a, b) {
  return a.x < b.right && b.x < a.right && a.y < b.bottom && b.y < a.bottom;
}

async function check(file) {
  const problems = [];
  const moddle = new BpmnModdle({ zeebe });
  const { rootElement: definitions, warnings } = await moddle.fromXML(readFileSync(file, 'utf8'));
  for (const warning of warnings) {
    const id = warning.element && warning.element.id ? ` (${warning.element.id})` : '';
    problems.push(`import warning${id}: ${warning.message}`);
  }

  // Every element the diagram must show, with its container (process, sub-process or collaboration).
  const drawable = new Map();
  const visit = (container, elements) => {
    for (const element of elements || []) {
      drawable.set(element.id, { element, container });
      if (element.flowElements) visit(element, element.flowElements);
      if (element.artifacts) visit(element, element.artifacts);
    }
  };
  for (const root of definitions.rootElements) {
    if (root.$type === 'bpmn:Process') {
      visit(root, root.flowElements);
      visit(root, root.artifacts);
    } else if (root.$type === 'bpmn:Collaboration') {
      visit(root, root.participants);
      visit(root, root.messageFlows);
    }
  }

  const di = new Map();
  for (const diagram of definitions.diagrams || []) {
    for (const item of diagram.plane.planeElement || []) {
      const element = item.bpmnElement;
      if (!element) {
        problems.push(`${item.id}: diagram element names no BPMN element`);
        continue;
      }
      if (di.has(element.id)) problems.push(`${element.id}: drawn twice (${di.get(element.id).id}, ${item.id})`);
      di.set(element.id, item);
    }
  }
  for (const [id, { element }] of drawable) {
    if (element.$type === 'bpmn:DataObject') continue; // drawn through its references
    if (!di.has(id)) problems.push(`${id} (${element.$type.slice(5)}): no BPMNDI, the modeler would not draw it`);
  }

  // Layout: inside its container, and apart from its siblings.
  const shapes = [];
  for (const [id, { element, container }] of drawable) {
    const shape = di.get(id);
    if (!shape || !shape.bounds) continue;
    shapes.push({ id, element, container, box: bounds(shape), expanded: shape.isExpanded });
  }
  for (const shape of shapes) {
    const parent = shapes.find((s) => s.id === shape.container.id);
    if (parent && !inside(shape.box, parent.box)) {
      problems.push(`${shape.id}: drawn outside the sub-process ${parent.id} that contains it`);
    }
  }
  for (let i = 0; i < shapes.length; i++) {
    for (let j = i + 1; j < shapes.length; j++) {
      const [a, b] = [shapes[i], shapes[j]];
      if (!overlap(a.box, b.box)) continue;
      const attached = (s, t) => s.element.attachedToRef && s.element.attachedToRef.id === t.id;
      const nested = (s, t) => {
        for (let c = s.container; c; c = drawable.get(c.id) && drawable.get(c.id).container) {
          if (c.id === t.id) return true;
          if (!drawable.has(c.id)) break;
        }
        return false;
      };
      if (attached(a, b) || attached(b, a) || nested(a, b) || nested(b, a)) continue;
      problems.push(`${a.id} and ${b.id}: drawn on top of each other`);
    }
  }

  for (const [id, { element }] of drawable) {
    if (!TEMPLATED.has(element.$type)) continue;
    const template = element.modelerTemplate;
    if (!template) problems.push(`${id}: no element template (zeebe:modelerTemplate)`);
    else if (!templates.has(template)) problems.push(`${id}: element template '${template}' is not in connectors/element-templates`);
  }
  return problems;
}

let failed = false;
for (const file of process.argv.slice(2)) {
  const problems = await check(file);
  if (problems.length) {
    failed = true;
    console.log(`${file}:`);
    for (const problem of problems) console.log(`  ${problem}`);
  } else {
    console.log(`${file}: opens cleanly (no import warning, everything drawn, no overlap, templates known)`);
  }
}
process.exit(failed ? 1 : 0);

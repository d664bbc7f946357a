#!/usr/bin/env bash
# A birth registration through the HTTP API with curl, against `govflow serve --sandbox`:
#
#   cargo run --release -- serve --sandbox      # prints the token and the sandbox's URL
#   TOKEN=gf_... SANDBOX=http://127.0.0.1:NNNN examples/curl-birth-registration.sh
#
# It deploys the journeys, registers a birth for a mother of the sandbox's population (synchronous start:
# the answer carries the final variables), then reads the instance, its events, verifies its audit chain
# and lists the maternity benefit the birth started. BASE defaults to http://127.0.0.1:8080; needs jq.
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:8080}
: "${TOKEN:?set TOKEN to the token govflow serve printed}"
: "${SANDBOX:?set SANDBOX to the sandbox URL govflow serve printed}"
cd "$(dirname "$0")/.."
auth=(-H "Authorization: Bearer $TOKEN")

echo "== deploy processes/"
for file in processes/*.dmn processes/*.bpmn; do
  curl -sS --fail-with-body "${auth[@]}" -H 'Content-Type: application/xml' \
    --data-binary @"$file" "$BASE/api/v1/deployments?name=$(basename "$file")" | jq -c '[.deployed[] | {processId, version, new}]'
done

echo "== a mother from the sandbox's population register"
mother_id=$(curl -sS --fail-with-body "$SANDBOX/sandbox/seed" | jq -r '.examples.verifiedMother')
person=$(curl -sS --fail-with-body -H 'Information-Mediator-Client: GOV/GOV/WORKFLOW/GOVFLOW' \
  -H 'Content-Type: application/json' -d "{\"query\":{\"content\":{\"ID\":\"$mother_id\"}}}" \
  "$SANDBOX/registries/data/population-register/1.0/read" | jq -c '.content')
echo "   $person"

echo "== register the birth (waits until the journey ends)"
today=$(date -u +%F)
body=$(jq -nc --argjson p "$person" --arg today "$today" '{
  processId: "birth-registration",
  variables: {
    mother: {nationalId: $p.ID, firstName: $p.firstName, lastName: $p.lastName, phone: $p.phone},
    father: null,
    child: {firstName: "Zawadi", lastName: $p.lastName, birthDate: $today, gender: "female", placeOfBirth: "District Hospital"}
  }}')
started=$(curl -sS --fail-with-body "${auth[@]}" -H 'Content-Type: application/json' -d "$body" \
  "$BASE/api/v1/instances?wait=completed&timeout=20s")
echo "$started" | jq '{instance, state, certificate: .variables.birthRecord.certificateNumber}'
instance=$(echo "$started" | jq -r .instance)

echo "== the instance, its events, its audit chain"
curl -sS "${auth[@]}" "$BASE/api/v1/instances/$instance" | jq '{state, nEvents, variables: (.variables | keys)}'
curl -sS "${auth[@]}" "$BASE/api/v1/instances/$instance/events?limit=5" | jq -c '.items[] | {seq, type, actor}'
curl -sS "${auth[@]}" "$BASE/api/v1/instances/$instance/verify" | jq -c .

echo "== the maternity benefit the birth started (message birthRegistered)"
curl -sS "${auth[@]}" "$BASE/api/v1/instances?processId=maternity-benefit" | jq -c '.items[] | {instance, businessKey, state}'

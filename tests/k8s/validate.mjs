// Validate Kubernetes objects (a JSON array on stdin) against the Kubernetes API schemas
// (kubernetes-models) and the prometheus-operator CRD schemas (@kubernetes-models/prometheus-operator).
// Prints one line per object; exits 1 if any object is invalid or of a kind it has no schema for.
import { readFileSync } from "node:fs";

const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const obj of objects) {
  const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/") : ["", obj.apiVersion];
  const base = group.endsWith("monitoring.coreos.com")
    ? `@kubernetes-models/prometheus-operator/${group}/${version}`
    : `kubernetes-models/${group ? group + "/" : ""}${version}`;
  const name = `${obj.kind}/${obj.metadata?.name}`;
  let Model;
  try {
    Model = (await import(`${base}/${obj.kind}`))[obj.kind];
  } catch (err) {
    console.log(`NO SCHEMA ${name} (${obj.apiVersion}): ${err.message}`);
    failed += 1;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`valid ${name} (${obj.apiVersion})`);
  } catch (err) {
    console.log(`INVALID ${name} (${obj.apiVersion}): ${err.message}`);
    failed += 1;
  }
}
process.exit(failed ? 1 : 0);

// Validates the ServiceMonitor objects in a JSON array file (argv[2]) against
// the Prometheus operator's schema, as @kubernetes-models/prometheus-operator
// ships it (scripts/check-deploy.sh installs it). Exits 1 on the first that
// does not validate.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
if (objects.length === 0) {
  console.error("no ServiceMonitor to validate");
  process.exit(1);
}
for (const o of objects) {
  try {
    new ServiceMonitor(o).validate();
  } catch (e) {
    console.error(`ServiceMonitor ${o.metadata?.name}: ${e.message}`);
    process.exit(1);
  }
}
console.log(`${objects.length} ServiceMonitor(s) valid`);

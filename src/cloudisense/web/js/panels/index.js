// The dashboard's live panels, in display order (DASH.md: the shell mounts each into its section).
import { mount as alerts } from "./alerts.js";
import { mount as approvals } from "./approvals.js";
import { mount as audit } from "./audit.js";
import { mount as chatops } from "./chatops.js";
import { mount as logs } from "./logs.js";
import { mount as nodes } from "./nodes.js";
import { mount as services } from "./services.js";
import { mount as stats } from "./stats.js";

export const PANELS = [
  { id: "nodes", title: "Node", mount: nodes },
  { id: "approvals", title: "Approvals", mount: approvals },
  { id: "alerts", title: "Alerts", mount: alerts },
  { id: "services", title: "Services", mount: services },
  { id: "stats", title: "System", mount: stats },
  { id: "logs", title: "Log tail", mount: logs },
  { id: "chatops", title: "ChatOps", mount: chatops },
  { id: "audit", title: "Audit log", mount: audit },
];

// Placeholder until the panels land (task D2 replaces this file): no panels yet.
export const PANELS = [];

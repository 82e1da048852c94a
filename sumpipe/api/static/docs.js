"use strict";
// /docs: Swagger UI (served from the package, see sumpipe/api/docs.py) on this server's OpenAPI
// document. A file of its own, not an inline script, so the page's policy allows no inline script.
window.ui = SwaggerUIBundle({ url: "openapi.json", dom_id: "#swagger-ui" });

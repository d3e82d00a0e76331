// Shows the gateway's merged OpenAPI document. validatorUrl: null, or Swagger UI would send the
// document to its public validator for a badge.
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#api",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});

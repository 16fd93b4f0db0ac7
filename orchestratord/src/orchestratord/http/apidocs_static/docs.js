// The API documentation page of orchestratord: Swagger UI on the served document.
// Everything it loads comes from this server: the document (openapi.json) and Swagger
// UI's own assets (docs/assets/...). No validator badge (it would call out to
// validator.swagger.io). An API key typed into "Authorize" stays in this page's memory.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});

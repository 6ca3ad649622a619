/** The previous version's Worker (test/skew/previous.worker.js): its HTTP handler. */
declare const worker: ExportedHandler<Env>;
export default worker;

//! Bad input and abuse: every request gets a clear 4xx envelope and the service keeps serving.

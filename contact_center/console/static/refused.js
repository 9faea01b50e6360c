// A page refused to this user: nothing to fill in; the menu and sign-out still work.
import "./app.js";

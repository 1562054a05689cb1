<%-- seamless test guest: a JSP page naming the JVM that served it. --%><%@ page contentType="text/plain" %>jsp ok <%= ProcessHandle.current().pid() %>
